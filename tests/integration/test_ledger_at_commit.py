"""PostgreSQL: a posting's customer moves made just before the COMMIT (``ledger.post(at_commit=True)``,
a transfer's): refused there by the accounts' CHECK, undone with a rolled-back savepoint, and a
refused transfer answering (and storing) the 402 it always did."""
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from app.adapters.db import committed, get_engine, session_factory, unit_of_work
from app.adapters.models import Account, IdempotencyKey, JournalEntry, LedgerLine, Transfer
from app.services import ledger
from tests import builders

pytestmark = pytest.mark.postgres


def _balances(*ids: str) -> list[int]:
    with unit_of_work() as session:
        return [session.get(Account, account_id).available for account_id in ids]


def _rows_and_lines(*ids: str) -> list[tuple[int, int]]:
    """(the account row's available, the sum of its available lines) per account."""
    with unit_of_work() as session:
        return [(session.get(Account, account_id).available,
                 session.scalar(select(func.coalesce(func.sum(LedgerLine.amount), 0))
                                .where(LedgerLine.account_id == account_id, LedgerLine.balance_type == "available")))
                for account_id in ids]


def _entries() -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(JournalEntry))


def _post(session, api, source: str, target: str, amount: int) -> None:
    legs = [ledger.Leg(session.get(Account, source), -amount), ledger.Leg(session.get(Account, target), amount)]
    ledger.post(session, merchant_id=api.merchant_id, kind="transfer", source_id=None, legs=legs, at_commit=True)


def _statements(send, with_parameters: bool = False):
    """``send()``'s answer and the statements it sent, one line each (with their parameters if asked)."""
    seen = []

    def record(_conn, _cursor, statement, _parameters, context, _executemany):
        text = " ".join(statement.split())
        seen.append((text, context.compiled_parameters[0]) if with_parameters else text)

    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        return send(), seen
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)


def test_the_moves_wait_for_the_commit_and_go_with_it(client):
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    with unit_of_work() as session:
        _post(session, api, source, target, 30)
        session.flush()
        assert _balances(source, target) == [100, 0]  # not yet moved (another session sees the rows as they were)
        with committed(session):
            pass
    assert _balances(source, target) == [70, 30]
    with unit_of_work() as session:  # a plain commit sends them as well
        _post(session, api, source, target, 70)
    assert _balances(source, target) == [0, 100]


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_move_refused_at_the_commit_fails_it_and_writes_nothing(client, pipelined):
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    entries = _entries()
    with pytest.raises(IntegrityError) as refused:
        with unit_of_work() as session:
            _post(session, api, source, target, 101)
            if pipelined:
                with committed(session):
                    pass
    assert ledger.refused_at_commit(refused.value)
    assert _balances(source, target) == [100, 0] and _entries() == entries


def test_a_rolled_back_savepoint_takes_its_moves_along(client):
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    with unit_of_work() as session:
        with pytest.raises(RuntimeError):
            with session.begin_nested():
                _post(session, api, source, target, 40)
                raise RuntimeError("undo")
        with session.begin_nested():
            with session.begin_nested():  # released into its parent, which is kept
                _post(session, api, source, target, 10)
    assert _balances(source, target) == [90, 10]
    assert _entries() == 2  # the funding and the kept posting


def test_a_transfer_refused_at_the_commit_stores_and_replays_the_402_naming_the_short_account(client):
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    body, key = api.transfer_body(source, target, 101), builders.unique("idem")
    response, seen = _statements(lambda: api.post("/v1/transfers", body, key), with_parameters=True)
    assert response.status_code == 402, response.get_json()
    error = response.get_json()["error"]
    assert (error["code"], error["param"]) == ("insufficient_funds", "amount")
    assert source in error["message"]
    # First at the commit (the source's debit with its guard off, which only the at-commit move sends,
    # refused by the CHECK), then again with the source's debit guarded.
    moves = [(i, params) for i, (s, params) in enumerate(seen) if "UPDATE accounts SET" in s]
    unconditional = [i for i, params in moves if params["account_id"] == source and not params["guard_available"]]
    checked = [i for i, params in moves if params["account_id"] == source and params["guard_available"]]
    assert unconditional and checked and unconditional[0] < checked[0], seen
    # The refused COMMIT took the claim with it: no claim left to unlock, and no UPDATE sent for one.
    assert not [s for s, _params in seen if s.startswith("UPDATE idempotency_keys SET locked_until")], seen
    with unit_of_work() as session:
        row = session.get(IdempotencyKey, (api.merchant_id, key))
        assert (row.status, row.response_status) == ("done", 402)
        assert session.scalar(select(func.count()).select_from(Transfer)) == 0
    assert _balances(source, target) == [100, 0]
    replay = api.post("/v1/transfers", body, key)
    assert replay.status_code == 402 and replay.get_json() == response.get_json()
    assert replay.headers.get("Idempotent-Replayed") == "true"


def test_a_released_savepoint_does_not_send_the_moves_before_the_commit(client):
    """A savepoint released after the posting is not the commit (SQLAlchemy fires ``before_commit``
    there too): the moves still wait for it."""
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    with unit_of_work() as session:
        _post(session, api, source, target, 30)

        def release():
            with session.begin_nested():
                pass

        _, seen = _statements(release)
        assert not [s for s in seen if s.startswith("UPDATE accounts")], seen


def test_a_rolled_back_savepoint_keeps_moves_queued_before_it(client):
    """Moves queued in the transaction, then a savepoint whose inner savepoint is released and which is
    rolled back: the posting (its lines) is kept, so its moves are too, and each row matches its lines."""
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    with unit_of_work() as session:
        _post(session, api, source, target, 30)
        with pytest.raises(RuntimeError):
            with session.begin_nested():
                with session.begin_nested():
                    pass
                raise RuntimeError("undo this savepoint only")
    assert _rows_and_lines(source, target) == [(70, 70), (30, 30)]


def test_a_move_refused_later_does_not_surface_inside_another_savepoint(client):
    """``ledger.system_account`` reads an IntegrityError out of its savepoint as 'created concurrently':
    a queued move refused must come out of the commit, not out of that savepoint's release."""
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    with pytest.raises(IntegrityError) as raised:
        with unit_of_work() as session:
            _post(session, api, source, target, 101)
            ledger.system_account(session, api.merchant_id, "probe", "USD")
    assert ledger.refused_at_commit(raised.value), repr(raised.value)
    assert _rows_and_lines(source, target) == [(100, 100), (0, 0)]


def test_moves_of_a_closed_session_do_not_go_with_its_next_commit(client):
    """A Session may be used again after close(), which fires no rollback event: what it queued before
    is not sent then."""
    api = builders.api(client)
    source, target = api.account(funded=100)["id"], api.account()["id"]
    session = session_factory()()
    _post(session, api, source, target, 30)
    session.close()  # its transaction (the entry, the lines) is rolled back by the close
    session.commit()  # a new transaction, nothing in it
    session.close()
    assert _rows_and_lines(source, target) == [(100, 100), (0, 0)]
