"""Pooled connections: one idle in the pool for a while is pinged before use, and one the server
dropped meanwhile is replaced instead of failing the request; one in steady use is not pinged."""
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from app.adapters import db


def _backend_pid() -> int:
    with db.unit_of_work() as session:
        return session.execute(text("SELECT pg_backend_pid()")).scalar_one()


@pytest.mark.postgres
def test_a_dropped_idle_connection_is_replaced_on_checkout(clean, monkeypatch):
    first = _backend_pid()
    admin = create_engine(db.get_engine().url, poolclass=NullPool)  # not from the pool under test
    with admin.connect() as other:  # the server drops our pooled connection
        assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
    admin.dispose()
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)  # as if it had sat idle for long
    assert _backend_pid() != first  # the ping failed, the pool opened another, the work went on


@pytest.mark.postgres
def test_a_connection_in_steady_use_is_not_pinged(clean, monkeypatch):
    dialect = db.get_engine().dialect
    pings = []
    real_ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda conn: pings.append(conn) or real_ping(conn))
    first = _backend_pid()
    assert _backend_pid() == first and pings == []  # reused at once: no round trip to ping it
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)
    assert _backend_pid() == first and len(pings) == 1  # idle "long": pinged, alive, reused
