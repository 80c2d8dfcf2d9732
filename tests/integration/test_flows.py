"""Top-ups, withdrawals, refunds and balance payments: statuses, balances, ledger, refusals."""
import pytest

from tests import builders

DEST = {"type": "bank_account", "country": "US", "last4": "6789"}


def balance(api, account_id):
    return api.get(f"/v1/accounts/{account_id}").get_json()["balance"]


def test_topup_credits_the_account_on_success(stack):
    api = builders.api(stack.client)
    account = api.account()
    body = {"account": account["id"], "amount": 5000, "currency": "USD", "payment_method": dict(builders.CARD),
            "reference": builders.unique("top")}
    topup = api.post("/v1/topups", body).get_json()
    assert topup["id"].startswith("top_") and topup["status"] == "succeeded" and topup["account"] == account["id"]
    assert balance(api, account["id"]) == {"available": 5000, "pending": 0}
    failed = api.post("/v1/topups", {**body, "amount": 5051, "reference": builders.unique("top")}).get_json()
    assert failed["status"] == "failed" and balance(api, account["id"])["available"] == 5000
    late = api.post("/v1/topups", {**body, "amount": 5052, "reference": builders.unique("top")}).get_json()
    assert late["status"] == "processing" and balance(api, account["id"])["available"] == 5000
    assert stack.settle(api, f"/v1/topups/{late['id']}")["status"] == "succeeded"
    assert balance(api, account["id"])["available"] == 10052
    assert [t["id"] for t in api.get("/v1/topups").get_json()["data"]] == [late["id"], failed["id"], topup["id"]]


def test_topup_refusals(stack):
    api = builders.api(stack.client)
    usd = api.account()
    body = {"account": usd["id"], "amount": 100, "currency": "EUR", "payment_method": dict(builders.CARD),
            "reference": "t1"}
    assert api.post("/v1/topups", body).status_code == 422
    body = {**body, "currency": "USD", "payment_method": {"type": "balance", "account": usd["id"]}}
    assert api.post("/v1/topups", body).status_code == 400


def test_withdrawal_holds_then_settles(stack):
    api = builders.api(stack.client)
    account = api.account(funded=10_000)
    body = {"account": account["id"], "amount": 3000, "currency": "USD", "destination": DEST,
            "reference": builders.unique("wd")}
    wd = api.post("/v1/withdrawals", body).get_json()
    assert wd["id"].startswith("wd_") and wd["status"] == "succeeded"
    assert wd["fee"] == 25 and wd["routing"]["matched_rules"] == ["withdrawal-limits"]
    assert balance(api, account["id"]) == {"available": 7000, "pending": 0}
    slow = api.post("/v1/withdrawals", {**body, "amount": 1052, "reference": builders.unique("wd")}).get_json()
    assert slow["status"] == "processing"
    assert balance(api, account["id"]) == {"available": 5948, "pending": 1052}  # held at once
    assert stack.settle(api, f"/v1/withdrawals/{slow['id']}")["status"] == "succeeded"
    assert balance(api, account["id"]) == {"available": 5948, "pending": 0}


def test_failed_payout_releases_the_hold_once(stack):
    api = builders.api(stack.client)
    account = api.account(funded=10_000)
    body = {"account": account["id"], "amount": 4053, "currency": "USD", "destination": DEST,
            "reference": builders.unique("wd")}
    wd = api.post("/v1/withdrawals", body).get_json()
    assert balance(api, account["id"]) == {"available": 5947, "pending": 4053}
    wd = stack.settle(api, f"/v1/withdrawals/{wd['id']}")
    assert wd["status"] == "failed" and wd["failure_code"] == "card_declined"
    stack.work(rounds=2)  # nothing more happens
    assert balance(api, account["id"]) == {"available": 10_000, "pending": 0}
    entries = api.get(f"/v1/accounts/{account['id']}/entries?limit=100").get_json()["data"]
    assert sorted(e["kind"] for e in entries) == ["test_funding", "withdrawal_hold", "withdrawal_hold",
                                                  "withdrawal_release", "withdrawal_release"]


def test_withdrawal_beyond_balance_is_402_and_writes_nothing(stack):
    api = builders.api(stack.client)
    account = api.account(funded=1000)
    body = {"account": account["id"], "amount": 1001, "currency": "USD", "destination": DEST, "reference": "w"}
    response = api.post("/v1/withdrawals", body)
    assert response.status_code == 402 and response.get_json()["error"]["code"] == "insufficient_funds"
    assert api.get("/v1/withdrawals").get_json()["data"] == []
    assert balance(api, account["id"]) == {"available": 1000, "pending": 0}


def test_refunds_full_partial_several_never_above_paid(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(10_000)).get_json()
    first = api.post("/v1/refunds", {"payment": payment["id"], "amount": 3000, "reference": "r1",
                                     "reason": "requested_by_customer"}).get_json()
    assert first["id"].startswith("re_") and first["status"] == "succeeded" and first["payment"] == payment["id"]
    assert first["routing"]["channel"] == "sandbox" and first["fee"] == 0
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["amount_refunded"] == 3000
    too_much = api.post("/v1/refunds", {"payment": payment["id"], "amount": 7001, "reference": "r2"})
    assert too_much.status_code == 422 and too_much.get_json()["error"]["code"] == "refund_exceeds_payment"
    rest = api.post("/v1/refunds", {"payment": payment["id"], "reference": "r3"}).get_json()
    assert rest["amount"] == 7000 and rest["status"] == "succeeded"
    again = api.post("/v1/refunds", {"payment": payment["id"], "reference": "r4"})
    assert again.status_code == 422
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["amount_refunded"] == 10_000


def test_failed_refund_gives_the_amount_back(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(20_000)).get_json()
    refund = api.post("/v1/refunds", {"payment": payment["id"], "amount": 1051, "reference": "r1"}).get_json()
    assert refund["status"] == "failed"
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["amount_refunded"] == 0


@pytest.mark.parametrize("status_amount", [2051, 2052])
def test_only_succeeded_payments_are_refundable(stack, status_amount):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(status_amount)).get_json()
    response = api.post("/v1/refunds", {"payment": payment["id"], "reference": "r"})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "payment_not_refundable"


def test_balance_payment_moves_money_inside_the_ledger_and_refunds_back(stack):
    api = builders.api(stack.client)
    wallet = api.account(funded=5000)
    body = builders.payment_body(1200, payment_method={"type": "balance", "account": wallet["id"]})
    payment = api.post("/v1/payments", body).get_json()
    assert payment["status"] == "succeeded" and payment["attempts"] == []
    assert payment["routing"]["channel"] is None and payment["fee"] == 36
    assert balance(api, wallet["id"])["available"] == 3800
    refund = api.post("/v1/refunds", {"payment": payment["id"], "reference": "r"}).get_json()
    assert refund["status"] == "succeeded" and balance(api, wallet["id"])["available"] == 5000
    short = api.post("/v1/payments", builders.payment_body(
        9999, payment_method={"type": "balance", "account": wallet["id"]}))
    assert short.status_code == 402 and short.get_json()["error"]["code"] == "insufficient_funds"


def test_cross_merchant_objects_are_404(stack):
    mine, theirs = builders.api(stack.client, "Mine"), builders.api(stack.client, "Theirs")
    payment = theirs.post("/v1/payments", builders.payment_body(1000)).get_json()
    assert mine.get(f"/v1/payments/{payment['id']}").status_code == 404
    assert mine.post("/v1/refunds", {"payment": payment["id"], "reference": "x"}).status_code == 404
    account = theirs.account(funded=100)
    body = {"account": account["id"], "amount": 10, "currency": "USD", "destination": DEST, "reference": "w"}
    assert mine.post("/v1/withdrawals", body).status_code == 404


def test_same_idempotency_key_replays_the_payment(stack):
    api = builders.api(stack.client)
    body = builders.payment_body(4200)
    first = api.post("/v1/payments", body, key="pay-key")
    second = api.post("/v1/payments", body, key="pay-key")
    assert first.get_data() == second.get_data() and second.headers["Idempotent-Replayed"] == "true"
    assert len(api.get("/v1/payments").get_json()["data"]) == 1
