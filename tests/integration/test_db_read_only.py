"""db.read_only: a read that leaves the connection's prepared statements alone, and refuses writes."""
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError

from app.adapters.db import get_engine, read_only, unit_of_work
from app.adapters.models import Event, utcnow
from tests import builders


def _prepared_here(connection) -> int:
    """Statements this connection's PostgreSQL session holds prepared."""
    return connection.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()


@pytest.mark.postgres
def test_a_read_only_session_keeps_the_connections_prepared_statements(clean):
    """psycopg deallocates every prepared statement of a connection after a ROLLBACK; a read-only
    session must not cost the pooled connection it borrows what it had prepared (the API-key lookup
    runs one every 50 ms per process, between payments that reuse the same connections)."""
    engine = get_engine()
    engine.dispose()  # a pool of one fresh connection: LIFO hands the same one back each time below
    with engine.connect() as connection:
        for _ in range(8):  # psycopg prepares a statement from its 5th run on a connection
            connection.execute(select(func.count()).select_from(Event)).scalar()
        connection.commit()
        prepared = _prepared_here(connection)
        connection.commit()
    assert prepared >= 1
    with read_only() as session:
        assert session.execute(select(func.count()).select_from(Event)).scalar() >= 0
        assert _prepared_here(session.connection()) >= prepared  # the same pooled connection
    with engine.connect() as connection:
        assert _prepared_here(connection) >= prepared


@pytest.mark.postgres
def test_a_write_in_a_read_only_session_is_refused_and_nothing_is_kept(clean):
    merchant_id, _ = builders.merchant()
    row = {"id": "evt_readonly", "merchant_id": merchant_id, "type": "test.read_only", "object_id": "obj_1",
           "data": {}, "relayed": False, "created_at": utcnow()}
    with pytest.raises(DBAPIError, match="read-only transaction"):
        with read_only() as session:
            session.execute(insert(Event), row)
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Event).where(Event.id == "evt_readonly")) == 0


def test_a_read_only_session_sees_what_was_committed_and_ends_cleanly(clean):
    """Both backends: what it read is kept after it closes (objects are not expired), and a failed
    statement inside it comes out as the caller's error with the session rolled back."""
    merchant_id, _ = builders.merchant()
    with unit_of_work() as session:
        session.execute(insert(Event), {"id": "evt_seen", "merchant_id": merchant_id, "type": "test.read_only",
                                        "object_id": "obj_2", "data": {"a": 1}, "relayed": False,
                                        "created_at": utcnow()})
    with read_only() as session:
        event = session.get(Event, "evt_seen")
    assert event.data == {"a": 1}  # loaded, still readable after the session ended
    with pytest.raises(DBAPIError):
        with read_only() as session:
            session.execute(text("SELECT no_such_column FROM events"))
    with read_only() as session:  # the pool's connection is usable again
        assert session.get(Event, "evt_seen") is not None


@pytest.mark.postgres
def test_a_connection_a_read_only_session_used_writes_again_for_the_next_unit_of_work(clean):
    """BEGIN READ ONLY is a characteristic of the read-only session's connection, reset when the pool
    takes it back: the next transaction on the same pooled connection is a writing one."""
    merchant_id, _ = builders.merchant()
    engine = get_engine()
    engine.dispose()  # a pool of one fresh connection: LIFO hands the same one back each time below
    with read_only() as session:
        backend = session.execute(text("SELECT pg_backend_pid()")).scalar()
        assert session.execute(text("SHOW transaction_read_only")).scalar() == "on"
    with unit_of_work() as session:
        assert session.execute(text("SELECT pg_backend_pid()")).scalar() == backend  # the same connection
        assert session.execute(text("SHOW transaction_read_only")).scalar() == "off"
        session.execute(insert(Event), {"id": "evt_after_read_only", "merchant_id": merchant_id,
                                        "type": "test.read_only", "object_id": "obj_3", "data": {},
                                        "relayed": False, "created_at": utcnow()})
    with unit_of_work() as session:
        assert session.get(Event, "evt_after_read_only") is not None
