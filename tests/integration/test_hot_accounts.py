"""System accounts (settlement, fee revenue, channel clearing) are shared by every payment of a
merchant: their moves are queued with the lines and applied in batches, and a payment's outcome
commits together with its stored response."""
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from app.adapters.db import get_engine, unit_of_work
from app.adapters.models import Account, LedgerLine, Operation
from app.services import ledger
from tests import builders


def _balances(merchant_id: str) -> dict[str, int]:
    with unit_of_work() as session:
        return {code: available for code, available in session.execute(
            select(Account.system_code, Account.available).where(Account.merchant_id == merchant_id,
                                                                  Account.kind == "system"))}


def _statements():
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        seen.append(" ".join(statement.split()[:3]).upper())

    return seen, record


def _post(session, merchant_id, settlement, fees, amount, kind="test"):
    ledger.post(session, merchant_id=merchant_id, kind=kind, source_id=None,
                legs=[ledger.Leg(settlement, -amount), ledger.Leg(fees, amount)])


def test_system_moves_are_queued_with_the_lines_and_applied_in_batches(clean):
    merchant_id, _ = builders.merchant()
    with unit_of_work() as session:
        settlement = ledger.system_account(session, merchant_id, ledger.MERCHANT_SETTLEMENT, "USD")
        fees = ledger.system_account(session, merchant_id, ledger.FEE_REVENUE, "USD")
    seen, record = _statements()
    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        for amount in (300, 200):
            with unit_of_work() as session:
                _post(session, merchant_id, settlement, fees, amount)
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    assert not [s for s in seen if s.startswith("UPDATE ACCOUNTS")]  # no posting waits for a hot row
    assert _balances(merchant_id) == {ledger.MERCHANT_SETTLEMENT: 0, ledger.FEE_REVENUE: 0}  # rows lag
    with unit_of_work() as session:
        exact = ledger.system_balances(session, [settlement.id, fees.id])
    assert exact[(settlement.id, "available")] == -500 and exact[(fees.id, "available")] == 500
    assert ledger.apply_queued_moves() == 4 and ledger.apply_queued_moves() == 0
    assert _balances(merchant_id) == {ledger.MERCHANT_SETTLEMENT: -500, ledger.FEE_REVENUE: 500}


def test_queued_moves_go_with_a_rolled_back_savepoint_or_transaction(clean):
    merchant_id, _ = builders.merchant()
    with unit_of_work() as session:
        settlement = ledger.system_account(session, merchant_id, ledger.MERCHANT_SETTLEMENT, "USD")
        fees = ledger.system_account(session, merchant_id, ledger.FEE_REVENUE, "USD")
    with unit_of_work() as session:
        _post(session, merchant_id, settlement, fees, 100)
        savepoint = session.begin_nested()
        _post(session, merchant_id, settlement, fees, 40)
        savepoint.rollback()
        with session.begin_nested():
            _post(session, merchant_id, settlement, fees, 7)
    with unit_of_work() as session:
        _post(session, merchant_id, settlement, fees, 5)
        session.rollback()
    while ledger.apply_queued_moves():
        pass
    assert _balances(merchant_id) == {ledger.MERCHANT_SETTLEMENT: -107, ledger.FEE_REVENUE: 107}
    # (the clean fixture then checks every balance against the sum of its lines)


@pytest.mark.postgres
def test_concurrent_appliers_apply_each_move_once(clean):
    """Two workers applying at once (SKIP LOCKED): every queued move is applied exactly once."""
    from concurrent.futures import ThreadPoolExecutor

    merchant_id, _ = builders.merchant()
    with unit_of_work() as session:
        settlement = ledger.system_account(session, merchant_id, ledger.MERCHANT_SETTLEMENT, "USD")
        fees = ledger.system_account(session, merchant_id, ledger.FEE_REVENUE, "USD")
    for _ in range(20):
        with unit_of_work() as session:
            for _ in range(50):
                _post(session, merchant_id, settlement, fees, 1)

    def drain(_):
        applied = 0
        while n := ledger.apply_queued_moves(batch=37):
            applied += n
        return applied

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(drain, range(4))) == 2000
    assert _balances(merchant_id) == {ledger.MERCHANT_SETTLEMENT: -1000, ledger.FEE_REVENUE: 1000}


def test_a_payment_commits_twice_its_outcome_with_its_stored_response(stack):
    api = builders.api(stack.client)
    api.post("/v1/payments", builders.payment_body(1000))  # system accounts created
    commits = []

    def listener(connection):  # writing transactions only: read-only sessions (the key lookup) commit too
        if not connection.get_execution_options().get("payrouter_readonly"):
            commits.append(1)

    event.listen(get_engine(), "commit", listener)
    try:
        response = api.post("/v1/payments", builders.payment_body(2000))
    finally:
        event.remove(get_engine(), "commit", listener)
    assert response.status_code == 201 and response.get_json()["status"] == "succeeded"
    assert len(commits) == 2  # before the channel call; outcome, postings, event and stored response


def test_an_outcome_whose_commit_fails_stays_processing_and_a_status_query_settles_it(stack, monkeypatch):
    from app.services import callbacks, idempotency

    api = builders.api(stack.client)

    def lost(*_args, **_kwargs):
        raise OperationalError("UPDATE idempotency_keys", {}, Exception("connection lost"))

    monkeypatch.setattr(idempotency, "_finish", lost)
    body = builders.payment_body(2000, reference="lost-commit")
    response = api.post("/v1/payments", body, key="lost-commit-key")
    assert response.status_code >= 500
    monkeypatch.undo()
    again = api.post("/v1/payments", body, key="lost-commit-key")  # the key was unlocked: taken over at once
    assert again.status_code == 201 and again.get_json()["status"] == "processing"
    with unit_of_work() as session:
        op = session.scalars(select(Operation).where(Operation.reference == "lost-commit")).one()
        assert op.status == "processing" and op.next_query_at is not None
        assert session.scalar(select(func.count()).select_from(LedgerLine)
                              .where(LedgerLine.entry_id.in_(select(ledger.JournalEntry.id)
                                                             .where(ledger.JournalEntry.source_id == op.id)))) == 0
    assert again.get_json()["id"] == op.id  # the retry resumed it, no second payment
    assert callbacks.query_status(op.id) == "succeeded"
    assert callbacks.query_status(op.id) == "final"  # once
    settled = api.get(f"/v1/payments/{op.id}").get_json()
    assert settled["status"] == "succeeded" and [a["status"] for a in settled["attempts"]] == ["succeeded"]
    assert ledger.apply_queued_moves() > 0
    assert _balances(op.merchant_id)[ledger.MERCHANT_SETTLEMENT] == 2000 - settled["fee"]
