"""POST /v1/routing/simulate decides for a body of any operation kind, named by `kind` (contract §1);
`type`, the field's first name, is still taken."""
from __future__ import annotations

from app.services.rules_store import seed_default_rules
from tests import builders

DESTINATION = {"type": "bank_account", "country": "US", "last4": "6789"}


def test_a_withdrawal_is_simulated_under_the_withdrawal_rules(client):
    seed_default_rules()
    api = builders.api(client)
    body = {"kind": "withdrawal", "amount": 1_100_000, "currency": "USD", "destination": DESTINATION,
            "customer": {"id": "cus_1"}}
    decision = api.post("/v1/routing/simulate", body).get_json()
    assert "withdrawal-limits" in decision["matched_rules"], decision
    assert decision["outcome"] == "decline" and decision["decline_code"] == "limit_exceeded", decision
    small = api.post("/v1/routing/simulate", {**body, "amount": 5000}).get_json()
    assert small["outcome"] == "route" and small["channel"] == "sandbox" and small["fee"] == 25, small


def test_kind_and_its_earlier_name(client):
    seed_default_rules()
    api = builders.api(client)
    card = builders.payment_body(150_000)
    by_kind = api.post("/v1/routing/simulate", {**card, "kind": "payment"}).get_json()
    by_type = api.post("/v1/routing/simulate", {**card, "type": "payment"}).get_json()
    assert by_kind["matched_rules"] == by_type["matched_rules"] == ["big-usd-cards"]
    clash = api.post("/v1/routing/simulate", {**card, "kind": "payment", "type": "topup"})
    assert clash.status_code == 400 and clash.get_json()["error"]["param"] == "type"
    missing = api.post("/v1/routing/simulate", {"kind": "withdrawal", "amount": 100, "currency": "USD"})
    assert missing.status_code == 400 and missing.get_json()["error"]["param"] == "destination"


def test_a_withdrawal_body_as_sent_names_its_account_and_is_decided_on_the_accounts_customer(client):
    """The body a withdrawal or top-up is created with names an ``account``, not a customer: simulate takes
    it (it answered 400 parameter_unknown) and decides on that account's customer, as the operation would."""
    seed_default_rules()
    api = builders.api(client)
    blocked = api.account(customer={"id": "cus_kp", "country": "KP"})
    body = {"kind": "withdrawal", "account": blocked["id"], "amount": 5000, "currency": "USD",
            "destination": DESTINATION, "reference": builders.unique("wd")}
    answer = api.post("/v1/routing/simulate", body)
    assert answer.status_code == 200, answer.get_json()
    decision = answer.get_json()
    assert decision["outcome"] == "decline" and decision["decline_code"] == "country_blocked", decision
    made = api.post("/v1/withdrawals", {k: v for k, v in body.items() if k != "kind"}).get_json()
    assert made["error"]["decision"]["decline_code"] == "country_blocked", made  # the same decision
    topup = {"kind": "topup", "account": api.account()["id"], "amount": 5000, "currency": "USD",
             "payment_method": {"type": "card", "brand": "visa", "country": "US", "last4": "4242"}}
    assert api.post("/v1/routing/simulate", topup).get_json()["outcome"] == "route"
    unknown = api.post("/v1/routing/simulate", {**body, "account": "acct_nothing"})
    assert unknown.status_code == 404 and unknown.get_json()["error"]["param"] == "account"
    euros = api.post("/v1/routing/simulate", {**body, "currency": "EUR"})
    assert euros.status_code == 422 and euros.get_json()["error"]["code"] == "currency_mismatch"


REFUND_RULES = """
rules:
  - id: big-refunds-of-watched-customers
    priority: 100
    when: {all: [{fact: type, eq: refund}, {fact: customer.id, eq: cus_watched}, {fact: amount, gte: 5000}]}
    then: {decline: refund_review}
  - id: payments-via-alpha
    priority: 50
    when: {all: [{fact: type, eq: payment}]}
    then: {route: [acq_alpha]}
defaults: {route: [sandbox], fee: {percent: "1.0", fixed: 0}}
"""


def published(source: str, api) -> None:
    from app.services import rules_store
    from tests.support import wait_until

    version = rules_store.publish_and_announce(source, "test", "simulate rules")
    wait_until(lambda: api.post("/v1/routing/simulate", builders.payment_body(100)).get_json()["ruleset_version"]
               == version, what="the new rule set in use")


def test_a_refund_body_as_sent_is_decided_on_its_payment_as_the_refund_would_be(stack):
    """A refund's body names its ``payment`` and maybe an ``amount``, never a currency: simulate takes it
    (400 parameter_unknown before) and decides on what create_refund reads from the payment: its currency,
    its customer, by default what is left of it, and its channel."""
    api = builders.api(stack.client)
    published(REFUND_RULES, api)
    paid = api.post("/v1/payments", builders.payment_body(8000, customer={"id": "cus_watched"})).get_json()
    assert paid["status"] == "succeeded" and paid["routing"]["channel"] == "acq_alpha", paid
    whole = {"kind": "refund", **builders.refund_body(paid["id"])}
    answer = api.post("/v1/routing/simulate", whole)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["decline_code"] == "refund_review", answer.get_json()  # 8000 left, the customer's
    part = {**whole, "amount": 3000, "reason": "requested_by_customer", "metadata": {"ticket": "t1"}}
    simulated = api.post("/v1/routing/simulate", part).get_json()
    assert simulated["outcome"] == "route" and simulated["channel"] == "acq_alpha", simulated  # the payment's
    made = api.post("/v1/refunds", {k: v for k, v in part.items() if k != "kind"}).get_json()
    assert made["status"] == "succeeded" and made["routing"]["channel"] == "acq_alpha", made
    assert {k: simulated[k] for k in ("channel", "candidates", "dropped", "matched_rules", "fee")} == {
        "channel": made["routing"]["channel"], "candidates": made["routing"]["candidates"],
        "dropped": made["routing"]["dropped"], "matched_rules": made["routing"]["matched_rules"],
        "fee": made["fee"]}
    rest = api.post("/v1/routing/simulate", whole).get_json()  # 5000 left: still reviewed
    refused = api.post("/v1/refunds", builders.refund_body(paid["id"])).get_json()
    assert rest["decline_code"] == refused["error"]["decision"]["decline_code"] == "refund_review", refused
    under = api.post("/v1/routing/simulate", {**whole, "amount": 4999}).get_json()
    assert under["outcome"] == "route", under


def test_a_simulated_refund_is_refused_where_the_refund_would_be(client):
    api = builders.api(client)
    account = api.account(funded=10_000)
    balance = {"type": "balance", "account": account["id"]}
    paid = api.post("/v1/payments", builders.payment_body(2000, payment_method=balance)).get_json()
    assert paid["status"] == "succeeded", paid
    body = {"kind": "refund", **builders.refund_body(paid["id"])}
    inside = api.post("/v1/routing/simulate", body).get_json()
    assert inside["outcome"] == "route" and inside["channel"] is None and inside["candidates"] == [], inside
    unknown = api.post("/v1/routing/simulate", {**body, "payment": "pay_nothing"})
    assert unknown.status_code == 404 and unknown.get_json()["error"]["param"] == "payment", unknown.get_json()
    other = builders.api(client, name="Other")
    theirs = other.post("/v1/routing/simulate", body)
    assert theirs.status_code == 404 and theirs.get_json()["error"]["param"] == "payment", theirs.get_json()
    over = api.post("/v1/routing/simulate", {**body, "amount": 2001})
    assert over.status_code == 422 and over.get_json()["error"]["code"] == "refund_exceeds_payment"
    euros = api.post("/v1/routing/simulate", {**body, "currency": "EUR"})
    assert euros.status_code == 422 and euros.get_json()["error"]["code"] == "currency_mismatch"
    missing = api.post("/v1/routing/simulate", {"kind": "refund", "reference": "r"})
    assert missing.status_code == 400 and missing.get_json()["error"]["code"] == "parameter_missing"
    assert api.post("/v1/refunds", builders.refund_body(paid["id"])).status_code == 201
    done = api.post("/v1/routing/simulate", body)
    assert done.status_code == 422 and done.get_json()["error"]["code"] == "refund_exceeds_payment", done.get_json()


def test_a_field_of_another_kinds_body_is_refused_naming_it(client):
    """The simulate schema is every kind's fields at once; a field the kind's own create body does not take
    answers 400 parameter_unknown as that create would (a payment's ``payment`` made a 500: no amount)."""
    api = builders.api(client)
    paid = {"kind": "payment", "payment": "pay_x", "reference": "r"}
    answer = api.post("/v1/routing/simulate", paid)
    assert answer.status_code == 400 and answer.get_json()["error"]["param"] == "payment", answer.get_json()
    account = {**builders.payment_body(100), "account": api.account()["id"]}  # a payment names no account
    answer = api.post("/v1/routing/simulate", account)
    assert answer.status_code == 400 and answer.get_json()["error"]["param"] == "account", answer.get_json()
    sent_to = {"kind": "withdrawal", "amount": 100, "currency": "USD", "destination": DESTINATION,
               "payment_method": builders.CARD}
    answer = api.post("/v1/routing/simulate", sent_to)
    assert answer.status_code == 400 and answer.get_json()["error"]["param"] == "payment_method", answer.get_json()


def test_a_payment_body_as_sent_with_its_order_and_capture_method_is_decided_as_the_payment(client):
    """A payment's body may name its ``order`` and ``capture_method`` (400 parameter_unknown before): simulate
    takes them, decides as the payment is decided, and refuses what create_payment would refuse."""
    seed_default_rules()
    api = builders.api(client)
    order = api.post("/v1/orders", {"amount": 300_000, "currency": "USD", "reference": builders.unique("ord")})
    assert order.status_code == 201, order.get_json()
    body = builders.payment_body(250_000, order=order.get_json()["id"], capture_method="manual",
                                 description="two chairs", metadata={"campaign": "spring"})
    answer = api.post("/v1/routing/simulate", {"kind": "payment", **body})
    assert answer.status_code == 200, answer.get_json()
    simulated = answer.get_json()
    assert simulated["outcome"] == "route" and simulated["matched_rules"] == ["big-usd-cards"], simulated
    blocked = {**body, "customer": {"id": "cus_ir", "country": "IR"}}
    assert api.post("/v1/routing/simulate", blocked).get_json()["decline_code"] == "country_blocked"
    made = api.post("/v1/payments", blocked).get_json()  # the same decision (and nothing held of the order)
    assert made["error"]["decision"]["decline_code"] == "country_blocked", made
    unknown = api.post("/v1/routing/simulate", {**body, "order": "ord_nothing"})
    assert unknown.status_code == 404 and unknown.get_json()["error"]["param"] == "order", unknown.get_json()
    beyond = api.post("/v1/routing/simulate", {**body, "amount": 300_001})
    assert beyond.status_code == 409 and beyond.get_json()["error"]["code"] == "order_amount_exceeded"
    account = api.account(funded=10_000)
    balance = {**builders.payment_body(100, payment_method={"type": "balance", "account": account["id"]}),
               "capture_method": "manual"}
    manual = api.post("/v1/routing/simulate", balance)
    assert manual.status_code == 400 and manual.get_json()["error"]["param"] == "capture_method"
    assert api.post("/v1/payments", balance).get_json()["error"]["param"] == "capture_method"
    automatic = {**balance, "capture_method": "automatic"}
    simulated = api.post("/v1/routing/simulate", automatic).get_json()
    assert simulated["outcome"] == "route" and simulated["channel"] is None, simulated  # inside the ledger
    paid = api.post("/v1/payments", automatic).get_json()
    assert paid["routing"]["channel"] is None and paid["routing"]["candidates"] == simulated["candidates"], paid
    nowhere = api.post("/v1/routing/simulate", {**balance, "capture_method": "automatic",
                                                 "payment_method": {"type": "balance", "account": "acct_nothing"}})
    assert nowhere.status_code == 404 and nowhere.get_json()["error"]["param"] == "payment_method[account]"
    topup = {"kind": "topup", "account": account["id"], "amount": 100, "currency": "USD",
             "payment_method": {"type": "balance", "account": account["id"]}, "reference": builders.unique("top")}
    refused = api.post("/v1/routing/simulate", topup)
    assert refused.status_code == 400 and refused.get_json()["error"]["param"] == "payment_method[type]"


BIG_DECLINED = """
rules:
  - id: no-big
    priority: 100
    when: {all: [{fact: amount, gte: 5000}]}
    then: {decline: too_big}
defaults: {route: [sandbox], fee: {percent: "1.0", fixed: 0}}
"""


def test_a_declined_balance_payment_beyond_its_order_is_402_before_the_order_is_read(client):
    """create_payment decides a balance payment before it holds its order: a payment the rules decline is
    402 even when its order could not take it (payment_terms held the order first: 409), and simulate
    answers that decline; a routed one beyond its order is 409 in both."""
    api = builders.api(client)
    published(BIG_DECLINED, api)
    account = api.account(funded=100_000)
    order = api.post("/v1/orders", {"amount": 6000, "currency": "USD", "reference": builders.unique("ord")})
    balance = {"type": "balance", "account": account["id"]}
    body = builders.payment_body(7000, payment_method=balance, order=order.get_json()["id"])
    made = api.post("/v1/payments", body)
    assert made.status_code == 402 and made.get_json()["error"]["decision"]["decline_code"] == "too_big", \
        made.get_json()
    simulated = api.post("/v1/routing/simulate", {"kind": "payment", **body})
    assert simulated.status_code == 200 and simulated.get_json()["decline_code"] == "too_big", simulated.get_json()
    small = builders.payment_body(4000, payment_method=balance, order=order.get_json()["id"])
    assert api.post("/v1/payments", small).status_code == 201
    again = {**small, "reference": builders.unique("pay")}
    over = api.post("/v1/routing/simulate", {"kind": "payment", **again})
    assert over.status_code == 409 and over.get_json()["error"]["code"] == "order_amount_exceeded", over.get_json()
    assert api.post("/v1/payments", again).get_json()["error"]["code"] == "order_amount_exceeded"


def test_a_declined_refund_beyond_what_is_left_is_402_as_before(client):
    """create_refund decides before its reservation refuses an amount beyond what is left: a refund the rules
    decline is 402 whatever its amount (refund_terms refused it first: 422), and simulate answers that decline."""
    api = builders.api(client)
    account = api.account(funded=100_000)
    balance = {"type": "balance", "account": account["id"]}
    paid = api.post("/v1/payments", builders.payment_body(8000, payment_method=balance)).get_json()
    assert paid["status"] == "succeeded", paid
    published(BIG_DECLINED, api)
    body = builders.refund_body(paid["id"], amount=9000)
    made = api.post("/v1/refunds", body)
    assert made.status_code == 402 and made.get_json()["error"]["decision"]["decline_code"] == "too_big", \
        made.get_json()
    simulated = api.post("/v1/routing/simulate", {"kind": "refund", **body})
    assert simulated.status_code == 200 and simulated.get_json()["decline_code"] == "too_big", simulated.get_json()
    under = {**body, "amount": 4000}
    assert api.post("/v1/refunds", under).status_code == 201
    rest = {**builders.refund_body(paid["id"]), "amount": 4001}
    over = api.post("/v1/routing/simulate", {"kind": "refund", **rest})
    assert over.status_code == 422 and over.get_json()["error"]["code"] == "refund_exceeds_payment", over.get_json()
    assert api.post("/v1/refunds", rest).get_json()["error"]["code"] == "refund_exceeds_payment"
