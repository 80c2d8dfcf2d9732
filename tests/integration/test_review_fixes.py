"""Regressions found in review: key reuse, leaked limit reservations, unknown channel faults, an attempt
reopened by a late 'processing' answer, cached ids of rolled-back system accounts."""
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from app.adapters.db import unit_of_work
from app.adapters.models import IdempotencyKey, Operation, utcnow
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
    from app.adapters.channels_runtime import channel
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


def test_a_processing_answer_never_reopens_an_attempt_a_callback_settled_during_the_call(stack, monkeypatch):
    """The channel's callback is applied while our call to it is still in flight; its late
    'processing' answer must not turn the settled attempt back to processing."""
    from app.adapters.channels_runtime import channel
    from app.services import callbacks
    from channels.sandbox.adapter import SandboxChannel

    real_charge = SandboxChannel.charge

    def charge(self, request):
        result = real_charge(self, request)
        body, headers = builders.signed_callback(channel("sandbox"), request.reference, "succeeded",
                                                 result.channel_reference)
        callbacks.receive("sandbox", headers, body)
        assert callbacks.drain() == 1  # settled before the answer reaches the request
        return result

    monkeypatch.setattr(SandboxChannel, "charge", charge)
    api = builders.api(stack.client)
    created = api.post("/v1/payments", builders.payment_body(2052)).get_json()  # the sandbox answers processing
    assert created["status"] == "succeeded"
    assert [a["status"] for a in created["attempts"]] == ["succeeded"]
    fetched = api.get(f"/v1/payments/{created['id']}").get_json()
    assert fetched["status"] == "succeeded" and [a["status"] for a in fetched["attempts"]] == ["succeeded"]


def test_a_system_account_created_in_a_rolled_back_transaction_is_not_remembered(clean):
    """A merchant's first balance payment is refused (402) after its fee and settlement accounts
    were created in the same transaction; the next posting must not use their vanished ids."""
    from app.adapters.db import unit_of_work as uow
    from app.adapters.models import Account
    from app.services import ledger

    merchant_id, _ = builders.merchant("First")
    with uow() as session:  # a customer and a committed funding source for the second attempt
        customer = Account(id="acct_customer_x", merchant_id=merchant_id, kind="customer", currency="USD",
                           metadata_={}, available=0, pending=0, version=0, customer={"id": "c"})
        session.add(customer)
    for _ in range(2):  # the same process, twice: the second must not reuse a rolled-back id
        try:
            with uow() as session:
                settlement = ledger.system_account(session, merchant_id, ledger.MERCHANT_SETTLEMENT, "USD")
                # a second new account: its savepoint's release must not count as the commit
                ledger.system_account(session, merchant_id, ledger.FEE_REVENUE, "USD")
                again = ledger.system_account(session, merchant_id, ledger.MERCHANT_SETTLEMENT, "USD")
                assert again.id == settlement.id
                payer = session.get(Account, customer.id)
                ledger.post(session, merchant_id=merchant_id, kind="payment", source_id=None,
                            legs=[ledger.Leg(payer, -500), ledger.Leg(settlement, 500)])
        except Exception as exc:  # noqa: BLE001 - the customer holds nothing: refused, rolled back
            assert type(exc).__name__ == "InsufficientFunds"
    with uow() as session:
        funding = ledger.system_account(session, merchant_id, ledger.TEST_FUNDING, "USD")
        settlement = ledger.system_account(session, merchant_id, ledger.MERCHANT_SETTLEMENT, "USD")
        ledger.post(session, merchant_id=merchant_id, kind="test_funding", source_id=None,
                    legs=[ledger.Leg(funding, -700), ledger.Leg(settlement, 700)])
    ledger.apply_queued_moves()
    with uow() as session:
        stored = session.scalars(select(Account).where(Account.merchant_id == merchant_id,
                                                       Account.system_code == ledger.MERCHANT_SETTLEMENT)).one()
        assert stored.available == 700
