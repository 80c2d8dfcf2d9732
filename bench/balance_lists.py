"""A page of a merchant's balance transactions deep into a big ledger, and on a small one (issue #15, item 3).

    .venv/bin/python bench/balance_lists.py [--entries 1000000] [--small 1000] [--runs 20]
        [--server postgresql://postgres@127.0.0.1] [--prefix payrouter_bench_balance]

Two PostgreSQL databases of its own (``<prefix>_big``, ``<prefix>_small``, migrated, dropped at the
end), each one merchant whose payments are journal entries of three lines (clearing −100,
settlement +97, fee revenue +3), one a second, written server-side with INSERT … SELECT
generate_series, the ledger lines' secondary indexes dropped before the load and built after it,
then VACUUM ANALYZE. Each case is one page of 100 through the service the API uses
(validation.list_params → balance.list_transactions), its cursor in the middle of the list; the
two databases take turns run by run; median and p95 after two warm-ups, the statements counted.
Then EXPLAIN (ANALYZE, BUFFERS) of the big page's positions statement. Exits 1 if a case on the
big ledger takes more than twice (plus 1 ms) its time on the small one.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, text  # noqa: E402
from werkzeug.datastructures import MultiDict  # noqa: E402

from app.config import Config, normalize_database_url, set_config  # noqa: E402


def recreate(server: str, name: str, drop_only: bool = False) -> None:
    engine = create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if not drop_only:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def use(url: str) -> Config:
    from app.adapters import db

    db.dispose_all()
    config = Config.from_env().with_(database_url=normalize_database_url(url))
    set_config(config)
    return config


def fill(config: Config, n: int) -> tuple[str, float]:
    """Migrate and load ``n`` payment entries of one merchant: its id and the seconds the load took."""
    from app.adapters import migrate
    from app.adapters.db import get_engine, unit_of_work
    from app.services import ledger
    from app.services.merchants import create_merchant

    migrate.upgrade(config)
    with unit_of_work() as session:
        merchant = create_merchant(session, "bench balance")[0].id
        accounts = [ledger.system_account(session, merchant, code, "USD").id
                    for code in (ledger.CHANNEL_CLEARING + ":sandbox", ledger.MERCHANT_SETTLEMENT, ledger.FEE_REVENUE)]
    started = time.perf_counter()
    engine = get_engine(config)
    with engine.begin() as conn:
        indexes = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ledger_lines' "
                                    "AND indexname LIKE 'ix\\_%'")).all()
        for name, _ in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
        # The zero-sum trigger checks each entry at commit: one entry per statement row is what posting
        # does; the load writes whole lines of a kind at once, so it is off for the load only.
        conn.execute(text("SET session_replication_role = replica"))
        conn.execute(text(f"""INSERT INTO journal_entries (id, merchant_id, kind, source_id, created_at)
            SELECT 'je_' || lpad(g::text, 20, '0'), '{merchant}', 'payment', 'pay_' || lpad(g::text, 20, '0'),
                   timestamp '2026-01-01' + g * interval '1 second' FROM generate_series(1, {n}) g"""))
        for tag, account, amount in zip("csf", accounts, (-100, 97, 3), strict=True):
            conn.execute(text(f"""INSERT INTO ledger_lines (id, entry_id, account_id, balance_type, amount, currency,
                                                          created_at)
                SELECT 'ln_{tag}' || lpad(g::text, 20, '0'), 'je_' || lpad(g::text, 20, '0'), '{account}', 'available',
                       {amount}, 'USD', timestamp '2026-01-01' + g * interval '1 second'
                FROM generate_series(1, {n}) g"""))
        conn.execute(text("SET session_replication_role = origin"))
        for _, definition in indexes:
            conn.execute(text(definition))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE journal_entries"))
        conn.execute(text("VACUUM ANALYZE ledger_lines"))
    return merchant, time.perf_counter() - started


def cases(n: int) -> list[tuple[str, dict]]:
    middle = "txn_" + str(n // 2).rjust(20, "0")
    return [("first page", {}), ("cursor mid-list", {"starting_after": middle}),
            ("backwards mid-list", {"ending_before": middle}),
            ("type=payment, cursor mid-list", {"starting_after": middle, "type": "payment"})]


def page(config: Config, merchant_id: str, args: dict) -> tuple[float, int, int]:
    """One page: seconds, statements, objects."""
    from app.adapters.db import get_engine, unit_of_work
    from app.services import balance
    from app.services.merchants import MerchantScope
    from app.services.validation import list_params

    count = [0]

    def counted(*_args):
        count[0] += 1

    engine = get_engine(config)
    event.listen(engine, "before_cursor_execute", counted)
    try:
        started = time.perf_counter()
        query = MultiDict({"limit": "100", **args})
        with unit_of_work() as session:
            result = balance.list_transactions(session, MerchantScope(merchant_id, "bench", None, False),
                                               list_params(query, extra=balance.FILTERS), balance.filters_of(query))
        return time.perf_counter() - started, count[0], len(result.items)
    finally:
        event.remove(engine, "before_cursor_execute", counted)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1")
    parser.add_argument("--prefix", default="payrouter_bench_balance")
    opts = parser.parse_args()
    tables = {"small": (opts.small, f"{opts.prefix}_small"), "big": (opts.entries, f"{opts.prefix}_big")}
    merchants = {}
    try:
        for name, (n, db_name) in tables.items():
            recreate(opts.server, db_name)
            merchants[name], took = fill(use(f"{opts.server}/{db_name}"), n)
            print(f"{name}: {n:,} entries ({3 * n:,} lines) loaded in {took:.1f} s")
        failed = False
        print("| case | page | small: median / p95 ms | big: median / p95 ms | ratio | statements |")
        print("| --- | --- | --- | --- | --- | --- |")
        for (label, small_args), (_, big_args) in zip(cases(opts.small), cases(opts.entries), strict=True):
            times, statements, sizes = {"small": [], "big": []}, {}, {}
            for run in range(opts.runs + 2):
                for name, args in (("small", small_args), ("big", big_args)):
                    config = use(f"{opts.server}/{tables[name][1]}")
                    took, statements[name], sizes[name] = page(config, merchants[name], args)
                    if run >= 2:
                        times[name].append(took * 1000)
            med = {name: statistics.median(values) for name, values in times.items()}
            p95 = {name: sorted(values)[int(0.95 * (len(values) - 1))] for name, values in times.items()}
            ratio = med["big"] / med["small"]
            failed |= med["big"] > 2 * med["small"] + 1
            print(f"| {label} | {sizes['big']} | {med['small']:.1f} / {p95['small']:.1f} | {med['big']:.1f} / "
                  f"{p95['big']:.1f} | {ratio:.2f} | {statements['small']} / {statements['big']} |")
        explain(use(f"{opts.server}/{tables['big'][1]}"), merchants["big"], opts.entries)
        return 1 if failed else 0
    finally:
        from app.adapters import db

        db.dispose_all()
        for _, db_name in tables.values():
            recreate(opts.server, db_name, drop_only=True)


def explain(config: Config, merchant_id: str, n: int) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the positions statement of the mid-list page on the big ledger."""
    from app.adapters.db import get_engine

    seen = []
    engine = get_engine(config)

    def grab(conn, cursor, statement, params, context, executemany):
        seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", grab)
    page(config, merchant_id, {"starting_after": "txn_" + str(n // 2).rjust(20, "0")})
    event.remove(engine, "before_cursor_execute", grab)
    statement, params = next(s for s in seen if "UNION ALL" in s[0])
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
        print("\n".join(row[0] for row in cursor.fetchall()))


if __name__ == "__main__":
    sys.exit(main())
