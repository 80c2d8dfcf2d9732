"""A fee is charged only on success (contract §1): a failed object shows ``fee: 0``, in the API
and in its event, for every kind, whether it failed at once or later by a callback."""
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import Event, Operation
from tests import builders

DEST = {"type": "bank_account", "country": "US", "last4": "6789"}


def event_data(object_id: str, type_: str) -> dict:
    with unit_of_work() as session:
        return session.scalars(select(Event.data).where(Event.object_id == object_id, Event.type == type_)).one()


def stored_fee(object_id: str) -> int:
    with unit_of_work() as session:
        return session.get(Operation, object_id).fee


def test_a_declined_payment_shows_no_fee_and_neither_does_its_event(stack):
    api = builders.api(stack.client)
    paid = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    assert paid["status"] == "succeeded" and paid["fee"] > 0  # the rules do charge a fee
    declined = api.post("/v1/payments", builders.payment_body(2051)).get_json()
    assert declined["status"] == "failed" and declined["failure_code"] == "card_declined"
    assert declined["fee"] == 0
    assert api.get(f"/v1/payments/{declined['id']}").get_json()["fee"] == 0
    assert event_data(declined["id"], "payment.failed")["fee"] == 0
    assert stored_fee(declined["id"]) == 0  # what settlement reports sum is what was charged


def test_a_payment_failed_by_a_callback_shows_no_fee(stack):
    api = builders.api(stack.client)
    late = api.post("/v1/payments", builders.payment_body(2053)).get_json()
    assert late["status"] == "processing" and late["fee"] > 0  # quoted while it may still succeed
    failed = stack.settle(api, f"/v1/payments/{late['id']}")
    assert failed["status"] == "failed" and failed["fee"] == 0
    assert event_data(late["id"], "payment.failed")["fee"] == 0


def test_failed_topups_and_withdrawals_show_no_fee(stack):
    api = builders.api(stack.client)
    account = api.account(funded=10_000)
    topup = api.post("/v1/topups", {"account": account["id"], "amount": 5051, "currency": "USD",
                                    "payment_method": dict(builders.CARD), "reference": builders.unique("top")})
    topup = topup.get_json()
    assert topup["status"] == "failed" and topup["fee"] == 0
    assert event_data(topup["id"], "topup.failed")["fee"] == 0
    body = {"account": account["id"], "amount": 3051, "currency": "USD", "destination": DEST,
            "reference": builders.unique("wd")}
    wd = api.post("/v1/withdrawals", body).get_json()
    assert wd["status"] == "failed" and wd["fee"] == 0  # a succeeded one is charged 25 (withdrawal-limits)
    assert event_data(wd["id"], "withdrawal.failed")["fee"] == 0
    assert api.get(f"/v1/withdrawals/{wd['id']}").get_json()["fee"] == 0


def test_an_object_failed_before_this_rule_shows_no_fee(stack):
    """Rows written with a fee on a failed operation (before the rule held) show 0 too."""
    api = builders.api(stack.client)
    declined = api.post("/v1/payments", builders.payment_body(2051)).get_json()
    with unit_of_work() as session:
        session.get(Operation, declined["id"]).fee = 32
    assert api.get(f"/v1/payments/{declined['id']}").get_json()["fee"] == 0
