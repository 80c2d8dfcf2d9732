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
