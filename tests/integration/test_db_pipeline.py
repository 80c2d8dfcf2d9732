"""db.pipelined: statements sent without waiting for each answer still fail their transaction;
db.committed: a block and its COMMIT in one round trip on PostgreSQL."""
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from app.adapters.db import before_commit, committed, get_engine, pipelined, unit_of_work
from app.adapters.models import Event, JournalEntry, LedgerLine, new_id, utcnow
from tests import builders
from tests.wire import traced


def _event(merchant_id: str, event_id: str, object_id: str) -> dict:
    return {"id": event_id, "merchant_id": merchant_id, "type": "test.pipelined", "object_id": object_id,
            "data": {}, "relayed": False, "created_at": utcnow()}


def _count() -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Event).where(Event.type == "test.pipelined"))


def test_pipelined_statements_and_commit_land_together(clean):
    merchant_id, _ = builders.merchant()
    with unit_of_work() as session:
        with pipelined(session):
            driver = session.connection().connection.driver_connection
            if hasattr(driver, "pipeline"):  # PostgreSQL: really in pipeline mode here
                assert driver._pipeline is not None
            for i in range(3):
                session.execute(insert(Event), _event(merchant_id, f"evt_ok{i}", f"obj_{i}"))
            session.commit()
    assert _count() == 3


@pytest.mark.parametrize("block", ["pipelined, then commit inside", "committed"])
def test_an_error_in_a_pipelined_statement_fails_the_whole_transaction(clean, block):
    merchant_id, _ = builders.merchant()
    with pytest.raises(IntegrityError):
        with unit_of_work() as session:
            session.execute(insert(Event), _event(merchant_id, "evt_first", "obj_a"))
            with (committed if block == "committed" else pipelined)(session):
                session.execute(insert(Event), _event(merchant_id, "evt_second", "obj_b"))
                session.execute(insert(Event), _event(merchant_id, "evt_first", "obj_c"))  # same id: refused
                session.execute(insert(Event), _event(merchant_id, "evt_third", "obj_d"))
                if block != "committed":
                    session.commit()
    assert _count() == 0  # nothing before, in or after the failed statement was kept


def test_an_error_surfaces_as_sqlalchemys_when_the_block_ends(clean):
    """No COMMIT inside (as when a settlement's postings are sent): the refused insert is reported
    at the end of the block, as SQLAlchemy's IntegrityError, and nothing of the transaction stays."""
    merchant_id, _ = builders.merchant()
    with pytest.raises(IntegrityError):
        with unit_of_work() as session:
            with pipelined(session):
                session.execute(insert(Event), _event(merchant_id, "evt_one", "obj_a"))
                session.execute(insert(Event), _event(merchant_id, "evt_one", "obj_b"))  # same id: refused
            session.execute(insert(Event), _event(merchant_id, "evt_after", "obj_c"))
    assert _count() == 0


def _on_postgresql() -> bool:
    return get_engine().dialect.name == "postgresql"


def test_committed_sends_the_block_and_its_commit_in_one_round_trip(clean):
    """On PostgreSQL the block's statements, the savepoint's release and the COMMIT are answered in
    one round trip (psycopg's own commit inside a pipeline takes two: it syncs at its COMMIT and
    again when the pipeline ends). SQLite: the block, then the commit. Either way all of it lands."""
    merchant_id, _ = builders.merchant()

    def work():
        with unit_of_work() as session:
            session.execute(insert(Event), _event(merchant_id, "evt_c0", "obj_0"))  # BEGIN, then this
            session.begin_nested()
            with committed(session):
                for i in (1, 2):
                    session.execute(insert(Event), _event(merchant_id, f"evt_c{i}", f"obj_{i}"))
            assert not session.in_transaction()

    if _on_postgresql():
        _, wire = traced(get_engine(), work)
        assert wire.round_trips == 4, wire.messages  # BEGIN, the first insert, the SAVEPOINT, then the block
        block = wire.messages[wire.messages.index("F Query \"SAVEPOINT sa_savepoint_1\"") + 3:]
        assert [m for m in block if m.startswith("F Parse") and '"INSERT' not in m] == [
            'F Parse "" "RELEASE SAVEPOINT sa_savepoint_1" 0', 'F Parse "" "COMMIT" 0'], block
        assert block.count("F Sync") == 1, block
    else:
        work()
    assert _count() == 3


def test_committed_runs_the_before_commit_hooks_before_its_commit(clean):
    """What runs before each commit (an idempotency claim's lease renewed) is written in the transaction
    the block commits, not after it."""
    merchant_id, _ = builders.merchant()
    seen = []

    def hook(session):
        seen.append(session.connection().connection.driver_connection.info.transaction_status.name
                    if _on_postgresql() else "INTRANS")
        session.execute(insert(Event), _event(merchant_id, f"evt_hook{len(seen)}", f"obj_hook{len(seen)}"))

    with unit_of_work() as session:
        session.execute(insert(Event), _event(merchant_id, "evt_h0", "obj_h0"))
        stop = before_commit(session, hook)
        with committed(session):
            session.execute(insert(Event), _event(merchant_id, "evt_h1", "obj_h1"))
        stop()
    assert seen and "IDLE" not in seen, seen  # every run inside the transaction: none after its COMMIT
    with unit_of_work() as session:
        assert session.get(Event, "evt_hook1") is not None


def test_committed_runs_no_before_commit_hook_after_its_commit(clean):
    """Releasing a savepoint runs the hooks too (SQLAlchemy's before_commit); the session's commit after
    the COMMIT sent with the block must not run them again: a statement of theirs would begin (and
    commit) a transaction of its own, after the one the block committed."""
    merchant_id, _ = builders.merchant()
    runs = []

    def hook(session):
        runs.append(session.connection().connection.driver_connection.info.transaction_status.name
                    if _on_postgresql() else "INTRANS")

    with unit_of_work() as session:
        session.execute(insert(Event), _event(merchant_id, "evt_s0", "obj_s0"))
        session.begin_nested()
        stop = before_commit(session, hook)
        with committed(session):
            session.execute(insert(Event), _event(merchant_id, "evt_s1", "obj_s1"))
        stop()
    assert runs and "IDLE" not in runs, runs
    assert _count() == 2


@pytest.mark.postgres
def test_a_commit_refused_in_a_committed_block_is_raised_there(clean):
    """The COMMIT sent with the block can itself be refused (a deferred constraint: the ledger's balance
    check): SQLAlchemy's IntegrityError comes out of the block, and nothing was committed."""
    builders.bare_system_account("mer_c", "acct_c")
    with pytest.raises(IntegrityError):
        with unit_of_work() as session:
            with committed(session):
                session.add(JournalEntry(id="je_c", merchant_id="mer_c", kind="bad"))
                session.flush()
                session.add(LedgerLine(id=new_id("ln"), entry_id="je_c", account_id="acct_c",
                                       balance_type="available", amount=5, currency="USD"))
    with unit_of_work() as session:
        assert session.get(JournalEntry, "je_c") is None
