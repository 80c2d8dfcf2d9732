"""System accounts (settlement, fee revenue, channel clearing) are shared by every payment of a
merchant: their moves wait for the commit and go last, and a payment's outcome commits together
with its stored response."""
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from app import ledger
from app.db import get_engine, unit_of_work
from app.models import Account, LedgerLine, Operation
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


def test_system_moves_are_applied_last_at_the_commit(clean):
    merchant_id, _ = builders.merchant()
    with unit_of_work() as session:  # the accounts exist before the watched transaction
        settlement = ledger.system_account(session, merchant_id, ledger.MERCHANT_SETTLEMENT, "USD")
        fees = ledger.system_account(session, merchant_id, ledger.FEE_REVENUE, "USD")
    seen, record = _statements()
    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        with unit_of_work() as session:
            ledger.post(session, merchant_id=merchant_id, kind="test", source_id=None,
                        legs=[ledger.Leg(settlement, -300), ledger.Leg(fees, 300)])
            assert not [s for s in seen if s.startswith("UPDATE ACCOUNTS")]  # not yet
            session.execute(select(func.count()).select_from(Operation))
            before_commit = len(seen)
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    moves = [i for i, s in enumerate(seen) if s.startswith("UPDATE ACCOUNTS")]
    assert len(moves) == 2 and min(moves) >= before_commit, seen
    assert _balances(merchant_id) == {ledger.MERCHANT_SETTLEMENT: -300, ledger.FEE_REVENUE: 300}


def test_moves_deferred_in_a_rolled_back_savepoint_are_dropped(clean):
    merchant_id, _ = builders.merchant()
    with unit_of_work() as session:
        settlement = ledger.system_account(session, merchant_id, ledger.MERCHANT_SETTLEMENT, "USD")
        fees = ledger.system_account(session, merchant_id, ledger.FEE_REVENUE, "USD")
    with unit_of_work() as session:
        ledger.post(session, merchant_id=merchant_id, kind="kept", source_id=None,
                    legs=[ledger.Leg(settlement, -100), ledger.Leg(fees, 100)])
        savepoint = session.begin_nested()
        ledger.post(session, merchant_id=merchant_id, kind="undone", source_id=None,
                    legs=[ledger.Leg(settlement, -40), ledger.Leg(fees, 40)])
        savepoint.rollback()
        with session.begin_nested():  # a released savepoint's moves wait for the real commit
            ledger.post(session, merchant_id=merchant_id, kind="released", source_id=None,
                        legs=[ledger.Leg(settlement, -7), ledger.Leg(fees, 7)])
    assert _balances(merchant_id) == {ledger.MERCHANT_SETTLEMENT: -107, ledger.FEE_REVENUE: 107}
    with unit_of_work() as session:  # a transaction rolled back takes its moves along
        ledger.post(session, merchant_id=merchant_id, kind="rolled back", source_id=None,
                    legs=[ledger.Leg(settlement, -5), ledger.Leg(fees, 5)])
        session.rollback()
        session.commit()
    assert _balances(merchant_id) == {ledger.MERCHANT_SETTLEMENT: -107, ledger.FEE_REVENUE: 107}
    # (the clean fixture then checks every balance against the sum of its lines)


def test_a_payment_commits_twice_its_outcome_with_its_stored_response(stack):
    api = builders.api(stack.client)
    api.post("/v1/payments", builders.payment_body(1000))  # system accounts created
    commits = []
    listener = lambda _conn: commits.append(1)  # noqa: E731
    event.listen(get_engine(), "commit", listener)
    try:
        response = api.post("/v1/payments", builders.payment_body(2000))
    finally:
        event.remove(get_engine(), "commit", listener)
    assert response.status_code == 201 and response.get_json()["status"] == "succeeded"
    assert len(commits) == 2  # before the channel call; outcome, postings, event and stored response


def test_an_outcome_whose_commit_fails_stays_processing_and_a_status_query_settles_it(stack, monkeypatch):
    from app import idempotency
    from app.services import callbacks

    api = builders.api(stack.client)

    def lost(*_args, **_kwargs):
        raise OperationalError("UPDATE idempotency_keys", {}, Exception("connection lost"))

    monkeypatch.setattr(idempotency, "_finish", lost)
    response = api.post("/v1/payments", builders.payment_body(2000, reference="lost-commit"))
    assert response.status_code >= 500
    monkeypatch.undo()
    with unit_of_work() as session:
        op = session.scalars(select(Operation).where(Operation.reference == "lost-commit")).one()
        assert op.status == "processing" and op.next_query_at is not None
        assert session.scalar(select(func.count()).select_from(LedgerLine)
                              .where(LedgerLine.entry_id.in_(select(ledger.JournalEntry.id)
                                                             .where(ledger.JournalEntry.source_id == op.id)))) == 0
    assert callbacks.query_status(op.id) == "succeeded"
    assert callbacks.query_status(op.id) == "final"  # once
    settled = api.get(f"/v1/payments/{op.id}").get_json()
    assert settled["status"] == "succeeded" and [a["status"] for a in settled["attempts"]] == ["succeeded"]
    assert _balances(op.merchant_id)[ledger.MERCHANT_SETTLEMENT] == 2000 - settled["fee"]
