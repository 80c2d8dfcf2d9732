"""Regressions found in review: key reuse, leaked limit reservations, unknown channel faults."""
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from app.db import unit_of_work
from app.models import IdempotencyKey, Operation, utcnow
from tests import builders

DEST = {"type": "bank_account", "country": "US", "last4": "1234"}


def n_operations(kind):
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Operation).where(Operation.kind == kind))


def test_refused_withdrawals_give_their_limit_reservation_back(stack):
    api = builders.api(stack.client)
    account = api.account(funded=1000)
    for i in range(2):  # each reserves 1,000,000 of the 2,000,000 daily limit, then is refused
        response = api.post("/v1/withdrawals", {"account": account["id"], "amount": 1_000_000, "currency": "USD",
                                                "destination": DEST, "reference": f"big-{i}"})
        assert response.status_code == 402
        error = response.get_json()["error"]
        assert error["code"] == "insufficient_funds" and error["decision"]["matched_rules"] == ["withdrawal-limits"]
    small = api.post("/v1/withdrawals", {"account": account["id"], "amount": 100, "currency": "USD",
                                         "destination": DEST, "reference": "small"})
    assert small.status_code == 201, small.get_json()


def test_an_expired_key_reused_for_another_request_never_returns_the_old_object(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(5000), key="K1").get_json()
    with unit_of_work() as session:  # a day later the key is gone
        session.execute(delete(IdempotencyKey))
    response = api.post("/v1/refunds", {"payment": payment["id"], "reference": "r1"}, key="K1")
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["type"] == "idempotency_error" and payment["id"] in error["message"]
    assert n_operations("refund") == 0


def test_a_retry_that_takes_over_a_dead_request_resumes_its_payment(stack):
    api = builders.api(stack.client)
    body = builders.payment_body(5000)
    first = api.post("/v1/payments", body, key="K2").get_json()
    with unit_of_work() as session:  # as if the process had died after committing, before answering
        session.execute(update(IdempotencyKey).values(status="in_flight", response_body=None,
                                                      locked_until=utcnow() - timedelta(seconds=1)))
    again = api.post("/v1/payments", body, key="K2")
    assert again.status_code == 201 and again.get_json()["id"] == first["id"]
    assert n_operations("payment") == 1


def test_an_unexpected_channel_fault_leaves_the_operation_queryable(stack, monkeypatch):
    from app.channels_runtime import channel
    from channels.base import ChannelError

    sandbox = channel("sandbox")

    def broken(request):
        raise ChannelError("adapter bug")

    monkeypatch.setattr(sandbox, "charge", broken)
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(5000)).get_json()
    assert payment["status"] == "processing"
    assert payment["attempts"] == [{"channel": "sandbox", "status": "unknown", "error_code": "channel_error"}]
    with unit_of_work() as session:
        assert session.get(Operation, payment["id"]).next_query_at is not None
    monkeypatch.undo()
    final = stack.settle(api, f"/v1/payments/{payment['id']}")  # the channel never saw it
    assert final["status"] == "failed" and final["failure_code"] == "not_found"
