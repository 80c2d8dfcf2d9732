"""PostgreSQL's CPU for the index entries a payment's rows make, with migration 0026's indexes
(before) and 0027's (after), side by side in one database (issue #18, item 5).

Two scratch copies of ``operations``, ``events`` and ``journal_entries`` (``bench_*_before`` with
0026's indexes, ``bench_*_after`` with 0027's), and for each the writes a payment
makes to them, one statement a row as the app sends them (prepared): an operation inserted as
processing with its next query, then settled by compare-and-set (succeeded, no next query); an
event inserted unrelayed, then marked relayed (the relay); a journal entry inserted. The two
take turns block by block (``--rows`` rows a block, ``--rounds`` blocks each) on one connection,
after ``--prefill`` settled payments in each copy and VACUUM ANALYZE (so the planner has the real
tables' statistics: on an empty copy it took a status index for the compare-and-set); the
backend's on-CPU time (/proc/<pid>/schedstat, nanoseconds; PostgreSQL on this machine) is read
around each statement. Medians per row over the blocks; the commit after each block is left out.

    DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_bench .venv/bin/python bench/index_cost.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
import uuid

import psycopg

# The indexes 0027 changed, as each side has them (the tables' other indexes are copied from the
# live tables, whichever revision the database is at).
CHANGED = {"ix_operations_due", "ix_operations_payment_id", "ix_operations_order", "ix_events_relayed",
           "ix_events_unrelayed", "ix_journal_entries_merchant_id"}
SIDES = {
    "before": {"operations": ["(status, next_query_at)", "(payment_id)", "(order_id, created_at, id)"],
               "events": ["(relayed)"], "journal_entries": ["(merchant_id)"]},
    "after": {"operations": ["(status, next_query_at) WHERE next_query_at IS NOT NULL",
                             "(payment_id) WHERE payment_id IS NOT NULL",
                             "(order_id, created_at, id) WHERE order_id IS NOT NULL"],
              "events": ["(created_at, id) WHERE relayed IS false"], "journal_entries": []},
}

PREFILL = """
INSERT INTO bench_operations_{side} (id, merchant_id, livemode, kind, status, version, amount, currency, fee,
    amount_refunded, reference, idempotency_key, metadata, customer, payment_method, routing, channel,
    channel_reference, query_count, review, created_at, updated_at)
SELECT 'op_pre' || i, %(m)s, false, 'payment', 'succeeded', 1, 2000, 'USD', 0, 0, 'ref_pre' || i, 'key_pre' || i,
    '{{}}', json_build_object('id', 'cus_' || (i %% 1000)), '{{"type": "card"}}', '{{}}', 'sandbox', 'psp_pre' || i,
    0, false, now() - interval '1 second' * i, now()
FROM generate_series(1, %(n)s) i;
INSERT INTO bench_events_{side} (id, merchant_id, livemode, type, object_id, data, relayed, created_at)
SELECT 'evt_pre' || i, %(m)s, false, 'payment.succeeded', 'op_pre' || i, '{{}}', true, now() - interval '1 second' * i
FROM generate_series(1, %(n)s) i;
INSERT INTO bench_journal_entries_{side} (id, merchant_id, kind, source_id, created_at)
SELECT 'je_pre' || i, %(m)s, 'payment', 'op_pre' || i, now() - interval '1 second' * i FROM generate_series(1, %(n)s) i
"""
INSERT_OP = ("INSERT INTO {t} (id, merchant_id, livemode, kind, status, version, amount, currency, fee, "
             "amount_refunded, reference, idempotency_key, metadata, customer, payment_method, routing, channel, "
             "next_query_at, query_count, review, request_id, created_at, updated_at) VALUES (%s, %s, false, "
             "'payment', 'processing', 0, 2000, 'USD', 0, 0, %s, %s, '{{}}', '{{\"id\": \"bench\", \"country\": "
             "\"US\"}}', '{{\"type\": \"card\", \"brand\": \"visa\"}}', '{{}}', 'sandbox', now(), 0, false, %s, "
             "now(), now()) ON CONFLICT DO NOTHING RETURNING id")
SETTLE_OP = ("UPDATE {t} SET status = 'succeeded', version = 1, channel_reference = %s, next_query_at = NULL, "
             "review = false, updated_at = now() WHERE id = %s AND status = %s AND version = %s")  # as transitions.py
INSERT_EVENT = ("INSERT INTO {t} (id, merchant_id, livemode, type, object_id, data, request_id, relayed, created_at) "
                "VALUES (%s, %s, false, 'payment.succeeded', %s, '{{\"id\": \"x\"}}', %s, false, now())")
RELAY_EVENT = "UPDATE {t} SET relayed = true WHERE id = %s"
INSERT_ENTRY = ("INSERT INTO {t} (id, merchant_id, kind, source_id, description, request_id, created_at) "
                "VALUES (%s, %s, 'payment', %s, NULL, %s, now())")


def on_cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200, help="rows a block")
    parser.add_argument("--rounds", type=int, default=30, help="blocks of each schema")
    parser.add_argument("--prefill", type=int, default=20000,
                        help="settled payments (and relayed events, entries) each copy holds first")
    args = parser.parse_args()
    from app.config import Config

    url = Config.from_env().database_url
    if not url.startswith("postgresql"):
        print("set DATABASE_URL (PostgreSQL, migrated: payrouter init)", file=sys.stderr)
        return 2
    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    pid = conn.info.backend_pid
    merchant = conn.execute("SELECT id FROM merchants LIMIT 1").fetchone()
    if merchant is None:
        print("no merchant: run bench/statements.py once on this database first", file=sys.stderr)
        return 2
    merchant = merchant[0]
    tables = ("operations", "events", "journal_entries")
    try:
        for table in tables:
            kept = [definition for name, definition in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", (table,)) if name not in CHANGED]
            for side, changed in SIDES.items():
                copy = f"bench_{table}_{side}"
                conn.execute(f"DROP TABLE IF EXISTS {copy}")
                conn.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING DEFAULTS)")
                for definition in kept:  # "CREATE [UNIQUE] INDEX name ON public.table USING btree (…)"
                    head, _, rest = definition.partition(" ON ")
                    conn.execute(head.rsplit(" ", 1)[0] + f" ON {copy} " + rest.split(" ", 1)[1])
                for columns in changed[table]:
                    conn.execute(f"CREATE INDEX ON {copy} {columns}")
        for side in SIDES:  # settled payments, relayed events and their entries, then the planner's statistics
            for statement in PREFILL.format(side=side).split(";"):
                conn.execute(statement, {"n": args.prefill, "m": merchant})
            for table in tables:
                conn.execute(f"VACUUM ANALYZE bench_{table}_{side}")
        counts = {side: {t: conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s",
                                         (f"bench_{t}_{side}",)).fetchone()[0] for t in tables}
                  for side in ("before", "after")}
        print(f"indexes: before {counts['before']}, after {counts['after']}")
        spent: dict[str, list[float]] = {"before": [], "after": []}
        by: dict[str, dict[str, int]] = {"before": {}, "after": {}}
        for round_ in range(args.rounds + 1):  # the first round warms up: not counted
            for side in (("before", "after") if round_ % 2 else ("after", "before")):
                ns = _block(conn, pid, side, merchant, args.rows, by)
                if round_:
                    spent[side].append(ns / args.rows / 1000)
        b, a = statistics.median(spent["before"]), statistics.median(spent["after"])
        print(f"PostgreSQL backend CPU per payment's rows (operation inserted and settled, event inserted and "
              f"relayed, journal entry inserted), median of {args.rounds} blocks of {args.rows}:")
        print(f"  before (0026's indexes) {b:.1f} µs, after (0027's) {a:.1f} µs: {a - b:+.1f} µs ({a / b - 1:+.1%})")
        print("  by statement (mean µs per row, every block): " + "; ".join(
            f"{label} {by['before'][label] / 1000 / done:.1f} → {by['after'][label] / 1000 / done:.1f}"
            for label in by["before"] for done in [args.rows * (args.rounds + 1)]))
    finally:
        for table in tables:
            for side in ("before", "after"):
                conn.execute(f"DROP TABLE IF EXISTS bench_{table}_{side}")
        conn.close()
    return 0


def _block(conn, pid: int, side: str, merchant: str, rows: int, by: dict) -> int:
    ops, events, entries = (f"bench_{t}_{side}" for t in ("operations", "events", "journal_entries"))
    ids = [uuid.uuid4().hex for _ in range(rows)]
    total = 0
    with conn.transaction():
        for i in ids:
            for label, statement, params in (
                    ("insert op", INSERT_OP.format(t=ops), ("op_" + i, merchant, "ref_" + i, "key_" + i, "req_" + i)),
                    ("settle op", SETTLE_OP.format(t=ops), ("psp_" + i, "op_" + i, "processing", 0)),
                    ("insert event", INSERT_EVENT.format(t=events), ("evt_" + i, merchant, "op_" + i, "req_" + i)),
                    ("relay event", RELAY_EVENT.format(t=events), ("evt_" + i,)),
                    ("insert entry", INSERT_ENTRY.format(t=entries), ("je_" + i, merchant, "op_" + i, "req_" + i))):
                started = on_cpu_ns(pid)
                conn.execute(statement, params, prepare=True)
                spent = on_cpu_ns(pid) - started
                by[side][label] = by[side].get(label, 0) + spent
                total += spent
    return total

if __name__ == "__main__":
    sys.exit(main())
