"""Migration 0009 (livemode): the rows already there become test rows; going back down is refused
while live rows exist (live money must not turn into test money)."""
from __future__ import annotations

import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from app.adapters.migrate import alembic_config


@pytest.fixture
def scratch_engine(config, tmp_path):
    """An empty database of its own: a SQLite file, or a scratch PostgreSQL database."""
    if config.database_url.startswith("postgresql"):
        name = f"payrouter_mig_{uuid.uuid4().hex[:10]}"
        admin = create_engine(config.database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        engine = create_engine(admin.url.set(database=name))
    else:
        admin, name = None, None
        engine = create_engine(f"sqlite:///{tmp_path / 'mig.db'}")
    yield engine
    engine.dispose()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _migrate(engine, how, revision: str) -> None:
    cfg = alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        how(cfg, revision)


def test_existing_rows_become_test_rows_and_down_is_refused_while_live_rows_exist(scratch_engine):
    engine = scratch_engine
    _migrate(engine, command.upgrade, "0008_secrets_at_rest")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO merchants (id, name, created_at) VALUES ('mer_m', 'M', CURRENT_TIMESTAMP)"))
        conn.execute(text(
            "INSERT INTO accounts (id, merchant_id, kind, currency, metadata, available, pending, version, created_at) "
            "VALUES ('acct_old', 'mer_m', 'customer', 'USD', '{}', 0, 0, 0, CURRENT_TIMESTAMP)"))
        conn.execute(text(
            "INSERT INTO events (id, merchant_id, type, object_id, data, relayed, created_at) "
            "VALUES ('evt_old', 'mer_m', 'transfer.succeeded', 'tr_1', '{}', :f, CURRENT_TIMESTAMP)"), {"f": False})
    _migrate(engine, command.upgrade, "0009_livemode")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT livemode FROM accounts WHERE id = 'acct_old'")).scalar_one() in (False, 0)
        assert conn.execute(text("SELECT livemode FROM events WHERE id = 'evt_old'")).scalar_one() in (False, 0)
        conn.execute(text(
            "INSERT INTO accounts (id, merchant_id, livemode, kind, currency, metadata, available, pending, version, "
            "created_at) VALUES ('acct_live', 'mer_m', :t, 'customer', 'USD', '{}', 0, 0, 0, CURRENT_TIMESTAMP)"),
            {"t": True})
    columns = {c["name"] for c in inspect(engine).get_columns("accounts")}
    assert "livemode" in columns
    index = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("accounts")}["ix_accounts_list"]
    assert index == ["merchant_id", "livemode", "created_at", "id"]

    with pytest.raises(RuntimeError, match="accounts holds live-mode rows"):
        _migrate(engine, command.downgrade, "0008_secrets_at_rest")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM accounts WHERE id = 'acct_live'"))
    _migrate(engine, command.downgrade, "0008_secrets_at_rest")
    assert "livemode" not in {c["name"] for c in inspect(engine).get_columns("accounts")}
    with engine.begin() as conn:  # the rows are all still there
        assert conn.execute(text("SELECT id FROM accounts")).scalars().all() == ["acct_old"]
