"""The Alembic migrations build exactly the schema the models describe (on the run's backend)."""
import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.adapters.db import get_engine
from app.adapters.models import Base


def test_migrated_schema_matches_the_models(config):
    import app.adapters.webhook_models  # noqa: F401 - their tables are part of the metadata too

    with get_engine(config).connect() as connection, warnings.catch_warnings():
        # SQLite's reflection skips an expression index (ix_operations_customer), and autogenerate
        # then skips comparing it; PostgreSQL compares it.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        warnings.filterwarnings("ignore", "autogenerate skipping")
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    # The benchmark's own tables may sit in a benchmark database; nothing else may differ.
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name.startswith("bench_"))]
    assert diff == []


def test_downgrading_0007_applies_the_queued_moves_first(config, tmp_path):
    """On a database of its own (SQLite file, or a scratch PostgreSQL database): queued
    system-account moves are added to their rows before their table goes."""
    import uuid

    from alembic import command
    from sqlalchemy import create_engine, text

    from app.adapters.migrate import alembic_config

    if config.database_url.startswith("postgresql"):
        name = f"payrouter_mig_{uuid.uuid4().hex[:10]}"
        admin = create_engine(config.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
                              if config.database_url.startswith("postgresql://") else config.database_url,
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        url = admin.url.set(database=name)
    else:
        admin, name, url = None, None, f"sqlite:///{tmp_path / 'mig.db'}"
    engine = create_engine(url)
    try:
        cfg = alembic_config()
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0007_account_moves")
            connection.execute(text("INSERT INTO merchants (id, name, created_at) "
                                    "VALUES ('mer_m', 'M', CURRENT_TIMESTAMP)"))
            connection.execute(text(
                "INSERT INTO accounts (id, merchant_id, kind, system_code, currency, metadata, available, pending, "
                "version, created_at) VALUES ('acct_s', 'mer_m', 'system', 'fee_revenue', 'USD', '{}', 100, 0, 0, "
                "CURRENT_TIMESTAMP)"))
            for delta, balance in ((30, "available"), (12, "available"), (-5, "pending")):
                connection.execute(text("INSERT INTO account_moves (account_id, balance_type, delta, created_at) "
                                        "VALUES ('acct_s', :b, :d, CURRENT_TIMESTAMP)"), {"b": balance, "d": delta})
            command.downgrade(cfg, "0006_continuous_reconciliation")
            row = connection.execute(text("SELECT available, pending FROM accounts WHERE id = 'acct_s'")).one()
        assert tuple(row) == (142, -5)
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            admin.dispose()
