"""A page of a merchant's list, deep into a big table and on a 1,000-row table (issue #15, item 2).

    .venv/bin/python bench/lists.py [--rows 10000000] [--small 1000] [--runs 30] [--keep]
        [--server postgresql://postgres@127.0.0.1] [--prefix payrouter_bench_lists]

Builds two PostgreSQL databases, ``<prefix>_big`` (``--rows`` payments of one merchant) and
``<prefix>_small`` (``--small`` payments), each migrated as `payrouter init` does, and fills them
with INSERT … SELECT generate_series (server-side: no row crosses the wire): the operations
table's secondary indexes are dropped first and built again after the load (a bulk build is far
faster than maintaining 15 indexes row by row), then ANALYZE. Every payment has one attempt;
statuses 2% failed, 1% processing, the rest succeeded; four channels; 100,000 customers; one
payment a second.

Each case is one page through the service layer the API uses (listing.page with the request's
ListQuery checked by validation.list_params, then operations.view_all), its cursor in the middle
of the list (half the table deep): median and p95 over ``--runs`` runs after two warm-ups, the
time its statements took in the database (between before_ and after_cursor_execute) and how many
statements it ran. A page is 100 objects, or on both tables as many as the small table's page
held (a filter matches few of 1,000 rows), so both answer the same page. The page's statement is
then shown with EXPLAIN (ANALYZE, BUFFERS), and the same page written the old way (the OR form
of the cursor) for comparison. Exits 1 if a case on the big table takes more than twice its time
on the small one, in the database (plus 0.5 ms) or as a whole page (plus 1 ms): sub-millisecond
medians jitter by more than 2× on a shared machine.
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

from app.config import Config, normalize_database_url, set_config  # noqa: E402

CHANNELS = ("sandbox", "acq_alpha", "acq_beta", "acq_gamma")
CUSTOMERS = 100_000
PAGE = 100


def recreate_database(server: str, name: str) -> None:
    engine = create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def drop_database(server: str, name: str) -> None:
    engine = create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def use(url: str) -> Config:
    from app.adapters import db

    db.dispose_all()
    config = Config.from_env().with_(database_url=normalize_database_url(url))
    set_config(config)
    return config


def fill(config: Config, n: int) -> tuple[str, dict[str, float]]:
    """Migrate, then load ``n`` payments (and their attempts) of one merchant; its id and the seconds each step took."""
    from app.adapters import migrate
    from app.adapters.db import get_engine, unit_of_work
    from app.services.merchants import create_merchant

    migrate.upgrade(config)
    with unit_of_work() as session:
        merchant = create_merchant(session, "bench lists")[0].id
    channels = "(ARRAY[" + ",".join(f"'{c}'" for c in CHANNELS) + "])"
    took: dict[str, float] = {}
    engine = get_engine(config)
    with engine.begin() as conn:
        indexes = conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('operations', 'attempts') "
            "AND indexname LIKE 'ix\\_%'")).all()
        for name, _ in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
    steps = [
        ("operations", f"""
        INSERT INTO operations (id, merchant_id, livemode, kind, status, version, amount, currency, fee,
          amount_refunded, reference, metadata, customer, payment_method, routing, channel, query_count, review,
          created_at, updated_at)
        SELECT 'pay_' || lpad(g::text, 20, '0'), '{merchant}', false, 'payment',
               CASE WHEN g % 50 = 7 THEN 'failed' WHEN g % 100 = 3 THEN 'processing' ELSE 'succeeded' END,
               2, 1000 + g % 50000, 'USD', 30, 0, 'ref_' || g, '{{}}',
               json_build_object('id', 'cus_' || (g % {CUSTOMERS}), 'country', 'US'),
               '{{"type": "card", "brand": "visa", "last4": "4242"}}',
               json_build_object('channel', {channels}[1 + g % 4]), {channels}[1 + g % 4], 0, false,
               timestamp '2026-01-01' + g * interval '1 second', timestamp '2026-01-01' + g * interval '1 second'
        FROM generate_series(1, {n}) g"""),
        ("attempts", """
        INSERT INTO attempts (id, operation_id, seq, channel, status, created_at, updated_at)
        SELECT 'att_' || substr(id, 5), id, 1, channel, status, created_at, updated_at FROM operations"""),
    ]
    for name, sql in steps:
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(sql))
        took[name] = time.perf_counter() - started
    started = time.perf_counter()
    with engine.begin() as conn:
        for _, definition in indexes:
            conn.execute(text(definition))
    took["indexes"] = time.perf_counter() - started
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE operations"))
        conn.execute(text("VACUUM ANALYZE attempts"))
    took["vacuum analyze"] = time.perf_counter() - started
    return merchant, took


def payment_id(g: int) -> str:
    return "pay_" + str(g).rjust(20, "0")


def cases(n: int) -> list[tuple[str, dict]]:
    """(name, list query) — every cursor in the middle of the list."""
    middle = payment_id(n // 2)
    return [
        ("no filter", {"starting_after": middle}),
        ("backwards (ending_before)", {"ending_before": middle}),
        ("status=failed", {"starting_after": middle, "status": "failed"}),
        ("channel=acq_beta", {"starting_after": middle, "channel": "acq_beta"}),
        ("customer=cus_42", {"starting_after": middle, "customer": "cus_42"}),
        ("status=processing & created in a day", {
            "starting_after": middle, "status": "processing",
            "created[gte]": str(1767225600 + n // 2 - 86400), "created[lt]": str(1767225600 + n // 2)}),
        ("reference", {"reference": f"ref_{n // 2}"}),
    ]


def one_page(config: Config, merchant_id: str, params: dict, limit: int) -> tuple[int, list]:
    from app.adapters.db import read_only
    from app.adapters.models import Operation
    from app.services import listing, operations, validation
    from app.services.payments import list_filters, list_statuses

    query = validation.list_params(dict(params, limit=str(limit)), list_filters("payment"),
                                   statuses=list_statuses("payment"))
    with read_only(config) as session:
        page = listing.page(session, Operation, merchant_id=merchant_id, query=query,
                            columns={"payment": Operation.payment_id},
                            where=(Operation.livemode.is_(False), Operation.kind == "payment"))
        return len(operations.view_all(session, page.items)), page.items


def measure(tables: dict[str, tuple[Config, str, int]], runs: int) -> dict[str, dict[str, dict]]:
    """Each case's page on every table ({label: (config, merchant, rows)}), the tables taking turns run by
    run so a shared machine's load falls on both alike: the whole page's time, its statements' own time
    and their number, and the page statement's plan. A page is as large as the first table's was (a
    filter matches few of 1,000 rows), so every table answers a page of the same size."""
    from app.adapters.db import get_engine

    seen: list[tuple[str, object]] = []
    in_db: list[float] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info["bench_started"] = time.perf_counter()
        seen.append((statement, parameters))

    def after(conn, cursor, statement, parameters, context, executemany):
        in_db.append(time.perf_counter() - conn.info.pop("bench_started"))

    engines = {label: get_engine(config) for label, (config, _, _) in tables.items()}
    out: dict[str, dict[str, dict]] = {label: {} for label in tables}
    first = next(iter(tables))
    for number, (name, _) in enumerate(cases(2)):
        limit = PAGE
        samples = {label: ([], [], []) for label in tables}
        for engine in engines.values():
            event.listen(engine, "before_cursor_execute", before)
            event.listen(engine, "after_cursor_execute", after)
        try:
            for run in range(runs + 2):  # two warm-ups
                for label, (config, merchant, rows) in tables.items():
                    params = cases(rows)[number][1]
                    seen.clear()
                    in_db.clear()
                    started = time.perf_counter()
                    got, _items = one_page(config, merchant, params, limit)
                    took = (time.perf_counter() - started) * 1000
                    if label == first and run == 0:
                        limit = max(got, 1)
                    if run >= 2:
                        samples[label][0].append(took)
                        samples[label][1].append(sum(in_db) * 1000)
                        samples[label][2].append(len([s for s, _ in seen if s.lstrip().upper().startswith("SELECT")]))
        finally:
            for engine in engines.values():
                event.remove(engine, "before_cursor_execute", before)
                event.remove(engine, "after_cursor_execute", after)
        for label, (config, merchant, rows) in tables.items():
            params = cases(rows)[number][1]
            seen.clear()
            event.listen(engines[label], "before_cursor_execute", before)
            event.listen(engines[label], "after_cursor_execute", after)
            try:
                got, _items = one_page(config, merchant, params, limit)
            finally:
                event.remove(engines[label], "before_cursor_execute", before)
                event.remove(engines[label], "after_cursor_execute", after)
            page_sql, page_params = next((s, p) for s, p in seen if "FROM operations" in s and "LIMIT" in s)
            with engines[label].connect() as conn:
                plan = [row[0] for row in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + page_sql, page_params)]
            times, db_times, counts = samples[label]
            out[label][name] = {"median": statistics.median(times), "p95": sorted(times)[int(0.95 * (len(times) - 1))],
                                "db": statistics.median(db_times), "rows": got, "statements": max(counts),
                                "constant": min(counts) == max(counts), "plan": plan}
    return out


def old_form_plan(config: Config, merchant_id: str, n: int) -> list[str]:
    """The page with no filter, its cursor written as before: created_at < t OR (created_at = t AND id < id)."""
    from app.adapters.db import get_engine

    g = n // 2
    sql = (f"EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM operations WHERE merchant_id = '{merchant_id}' "
           f"AND livemode = false AND kind = 'payment' AND (created_at < timestamp '2026-01-01' + {g} * interval "
           f"'1 second' OR (created_at = timestamp '2026-01-01' + {g} * interval '1 second' "
           f"AND id < '{payment_id(g)}')) ORDER BY created_at DESC, id DESC LIMIT {PAGE + 1}")
    with get_engine(config).connect() as conn:
        return [row[0] for row in conn.exec_driver_sql(sql)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1")
    parser.add_argument("--prefix", default="payrouter_bench_lists")
    parser.add_argument("--keep", action="store_true", help="keep both databases (and reuse them with --reuse)")
    parser.add_argument("--reuse", action="store_true", help="measure databases kept by an earlier --keep run")
    args = parser.parse_args()
    tables: dict[str, tuple[Config, str, int]] = {}
    for label, rows in (("small", args.small), ("big", args.rows)):
        name = f"{args.prefix}_{label}"
        if not args.reuse:
            recreate_database(args.server, name)
        config = use(f"{args.server}/{name}")
        if args.reuse:
            from app.adapters.db import get_engine

            with get_engine(config).connect() as conn:
                merchant = conn.execute(text("SELECT id FROM merchants WHERE name = 'bench lists'")).scalar()
        else:
            started = time.perf_counter()
            merchant, took = fill(config, rows)
            print(f"{label}: {rows:,} payments and their attempts loaded in {time.perf_counter() - started:.0f} s ("
                  + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in took.items()) + ")", flush=True)
        tables[label] = (config, merchant, rows)
    results = measure(tables, args.runs)
    results["old form"] = old_form_plan(*tables["big"])
    print(f"\n| case (cursor mid-list) | page | {args.small:,} rows: page median / p95 ms, in the database | "
          f"{args.rows:,} rows: page median / p95 ms, in the database | ratio (page, database) | statements |")
    print("| --- | --- | --- | --- | --- | --- |")
    failed = False
    for name, small in results["small"].items():
        big = results["big"][name]
        varied = "" if small["constant"] and big["constant"] else " (varied)"
        failed |= big["db"] > 2 * small["db"] + 0.5 or big["median"] > 2 * small["median"] + 1.0
        print(f"| {name} | {big['rows']} | {small['median']:.1f} / {small['p95']:.1f}, {small['db']:.2f} | "
              f"{big['median']:.1f} / {big['p95']:.1f}, {big['db']:.2f} | "
              f"{big['median'] / small['median']:.2f}, {big['db'] / small['db']:.2f} | "
              f"{small['statements']} / {big['statements']}{varied} |")
    for name, big in results["big"].items():
        print(f"\n{name} ({args.rows:,} rows, {big['rows']} objects on the page):")
        print("\n".join("    " + line for line in big["plan"]))
    print(f"\nthe same page (no filter) with the cursor as an OR ({args.rows:,} rows):")
    print("\n".join("    " + line for line in results["old form"]))
    if not args.keep:
        from app.adapters import db

        db.dispose_all()
        for label in ("small", "big"):
            drop_database(args.server, f"{args.prefix}_{label}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
