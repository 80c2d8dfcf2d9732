"""The Alembic migrations build exactly the schema the models describe (on the run's backend)."""
import warnings
from contextlib import contextmanager

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


@contextmanager
def scratch_database(config, tmp_path):
    """An engine on a database of its own (SQLite file, or a scratch PostgreSQL database dropped after)."""
    import uuid

    from sqlalchemy import create_engine, text

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
        yield engine
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            admin.dispose()


def test_downgrading_0007_applies_the_queued_moves_first(config, tmp_path):
    """On a database of its own (SQLite file, or a scratch PostgreSQL database): queued
    system-account moves are added to their rows before their table goes."""
    from alembic import command
    from sqlalchemy import text

    from app.adapters.migrate import alembic_config

    with scratch_database(config, tmp_path) as engine:
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


def test_0015_drops_the_unread_source_format_and_a_downgrade_labels_versions_again(config, tmp_path):
    from alembic import command
    from sqlalchemy import inspect, text

    from app.adapters.migrate import alembic_config

    with scratch_database(config, tmp_path) as engine:
        cfg = alembic_config()
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0014_admin_search")
            for source, label in (("rules: []\n", "yaml"), ('{"rules": []}', "json")):
                connection.execute(text("INSERT INTO ruleset_versions (source, source_format, checksum, author, "
                                        "created_at) VALUES (:s, :f, 'c', 'a', CURRENT_TIMESTAMP)"),
                                   {"s": source, "f": label})
            command.upgrade(cfg, "0015_drop_ruleset_source_format")
            columns = {c["name"] for c in inspect(connection).get_columns("ruleset_versions")}
            assert "source_format" not in columns and {"source", "checksum", "author"} <= columns
            assert connection.execute(text("SELECT count(*) FROM ruleset_versions")).scalar() == 2
            command.downgrade(cfg, "0014_admin_search")
            rows = connection.execute(text("SELECT source, source_format FROM ruleset_versions "
                                           "ORDER BY version")).all()
        assert [tuple(r) for r in rows] == [("rules: []\n", "yaml"), ('{"rules": []}', "json")]


def _index_definitions(connection, names: list[str]) -> dict[str, str]:
    """The SQL that defines each index of ``names`` present (PostgreSQL's pg_indexes, SQLite's
    sqlite_master), by name."""
    from sqlalchemy import bindparam, text

    if connection.dialect.name == "postgresql":
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN :names"
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name IN :names"
    rows = connection.execute(text(query).bindparams(bindparam("names", expanding=True)), {"names": names})
    return {name: " ".join(sql.split()) for name, sql in rows}


def test_0027_keeps_out_of_four_indexes_the_rows_no_reader_asks_for_and_a_downgrade_puts_them_back(
        config, tmp_path):
    """A settled payment (no next query, no refund's payment, no order) and a relayed event have
    no entry in the partial indexes; the merchant index of journal entries, read by nothing, is
    gone. A downgrade restores the full indexes; upgrading again is clean."""
    from alembic import command

    from app.adapters.migrate import alembic_config

    partial = {"ix_operations_due": "next_query_at IS NOT NULL", "ix_operations_payment_id": "payment_id IS NOT NULL",
               "ix_operations_order": "order_id IS NOT NULL", "ix_events_unrelayed": "relayed IS false"}
    full = ["ix_operations_due", "ix_operations_payment_id", "ix_operations_order", "ix_events_relayed",
            "ix_journal_entries_merchant_id"]
    names = sorted({*partial, *full})
    with scratch_database(config, tmp_path) as engine:
        cfg = alembic_config()
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            sqlite = connection.dialect.name == "sqlite"
            for _ in range(2):
                command.upgrade(cfg, "0027_payment_indexes")
                upgraded = _index_definitions(connection, names)
                assert sorted(upgraded) == sorted(partial)
                for name, predicate in partial.items():
                    # PostgreSQL prints the predicate back in its own words, SQLite as it was written
                    expected = f"WHERE {predicate.replace('IS false', 'IS 0')}" if sqlite else \
                        f"WHERE ({predicate.replace('IS false', 'IS FALSE')})"
                    assert upgraded[name].endswith(expected), upgraded[name]
                command.downgrade(cfg, "0026_channel_account_checks")
                downgraded = _index_definitions(connection, names)
                assert sorted(downgraded) == sorted(full)
                assert not any("WHERE" in sql for sql in downgraded.values())
