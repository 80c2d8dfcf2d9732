"""Attacks on ``ledger.post(at_commit=True)`` (PostgreSQL): moves queued for the COMMIT must be sent
at the commit only, kept with the (sub)transaction they were queued in, and never outlive it."""
import pytest
from sqlalchemy import func, select

from app.adapters.db import get_engine, unit_of_work
from app.adapters.models import Account, LedgerLine
from app.services import ledger
from tests import builders

pytestmark = pytest.mark.postgres


def _rows_and_lines(*ids: str) -> list[tuple[int, int]]:
    """(the account row's available, the sum of its available lines) per account."""
    with unit_of_work() as session:
        return [(session.get(Account, account_id).available,
                 session.scalar(select(func.coalesce(func.sum(LedgerLine.amount), 0))
                                .where(LedgerLine.account_id == account_id,
                                       LedgerLine.balance_type == "available")))
                for account_id in ids]


def _post(session, api, source: str, target: str, amount: int) -> None:
    legs = [ledger.Leg(session.get(Account, source), -amount), ledger.Leg(session.get(Account, target), amount)]
    ledger.post(session, merchant_id=api.merchant_id, kind="transfer", source_id=None, legs=legs, at_commit=True)


def _moves_sent(session):
    seen = []

    def record(_conn, _cursor, statement, _parameters, _context, _executemany):
        if statement.startswith("UPDATE accounts SET"):
            seen.append(statement)

    from sqlalchemy import event
    event.listen(get_engine(), "before_cursor_execute", record)
    return seen, lambda: event.remove(get_engine(), "before_cursor_execute", record)


def test_a_released_savepoint_does_not_send_the_moves_before_the_commit(client):
    """A savepoint released after the posting is not the commit: the moves still wait for it."""
    if get_engine().dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    with unit_of_work() as session:
        _post(session, api, source, target, 30)
        seen, stop = _moves_sent(session)
        try:
            with session.begin_nested():
                pass
            assert seen == [], "the queued moves were sent at a savepoint's release, not at the commit"
        finally:
            stop()


def test_a_rolled_back_savepoint_keeps_moves_queued_before_it(client):
    """Moves queued in the transaction, then a savepoint whose inner savepoint is released and which is
    rolled back: the posting (its lines) is kept, so its moves must be too. The row must match its lines."""
    if get_engine().dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    with unit_of_work() as session:
        _post(session, api, source, target, 30)
        with pytest.raises(RuntimeError):
            with session.begin_nested():
                with session.begin_nested():  # released: fires the session's before_commit
                    pass
                raise RuntimeError("undo this savepoint only")
    assert _rows_and_lines(source, target) == [(70, 70), (30, 30)]


def test_a_move_refused_at_a_savepoint_release_is_not_taken_for_a_concurrent_insert(client):
    """ledger.system_account reads an IntegrityError out of its savepoint as 'created concurrently';
    a queued move refused there (sent early by the release) must not surface inside it."""
    if get_engine().dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    with pytest.raises(Exception) as raised:
        with unit_of_work() as session:
            _post(session, api, source, target, 101)  # short: refused when its moves are sent
            ledger.system_account(session, api.merchant_id, "h1_probe", "USD")
    assert ledger.refused_at_commit(raised.value), repr(raised.value)
    assert _rows_and_lines(source, target) == [(100, 100), (0, 0)]


def test_moves_of_a_closed_session_do_not_go_with_its_next_commit(client):
    """A Session may be used again after close(): what it queued before must not be sent then."""
    if get_engine().dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    from app.adapters.db import session_factory
    session = session_factory()()
    _post(session, api, source, target, 30)
    session.close()  # its transaction (the entry, the lines) is rolled back by the close
    session.commit()  # a new transaction, nothing in it
    session.close()
    assert _rows_and_lines(source, target) == [(100, 100), (0, 0)]
