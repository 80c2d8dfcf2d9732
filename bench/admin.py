"""Every admin console page, timed on PostgreSQL holding 1,000,000 operations (issue #12, item 8).

    .venv/bin/python bench/admin.py [--operations 1000000] [--days 30] [--requests 40] [--keep]
        [--database-url postgresql://postgres@127.0.0.1/payrouter_bench_admin]

Builds its own database (dropped at the end unless --keep), migrated as `payrouter init` does,
then fills it in bulk with INSERT … SELECT generate_series (one statement per table, a few
minutes at most): the operations spread over the last ``--days`` days (newest first by g), one
attempt each, and for the newest 200,000 their callbacks, events, webhook deliveries and attempts;
ledger postings for 100,000; 50,000 transfers; 10,000 reconciliation runs and 5,000 issues; 10,000
audit rows. Then an admin logs in through the log-in page (Flask test client, the real app) and
every page — each search filter, an operation's timeline, page two of a search — is requested
``--requests`` times after two warm-ups. Prints p50/p95/max per page; exits 1 if any p95 ≥ 300 ms
or any page does not answer 200.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from app.config import Config, normalize_database_url, set_config  # noqa: E402

BUDGET_MS = 300.0
MERCHANTS = 50
RECENT = 200_000  # the newest operations get callbacks, events and webhook deliveries
CHANNELS = ("sandbox", "acq_alpha", "acq_beta", "acq_gamma")
PASSWORD = "bench admin password"


def recreate_database(url: str) -> None:
    engine = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    name = url.rsplit("/", 1)[1]
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def drop_database(url: str) -> None:
    from app.adapters import db

    db.dispose_all()
    engine = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    engine.dispose()


def fill(n: int, days: int) -> dict:
    """The bulk rows; returns a few ids the pages are asked about."""
    from app.adapters.db import get_engine, unit_of_work
    from app.services.merchants import create_merchant

    with unit_of_work() as session:
        merchants = [create_merchant(session, f"bench {i}")[0].id for i in range(MERCHANTS)]
    array = "(ARRAY[" + ",".join(f"'{m}'" for m in merchants) + "])"
    channels = "(ARRAY[" + ",".join(f"'{c}'" for c in CHANNELS) + "])"
    steps = [
        ("operations", f"""
        WITH src AS (
          SELECT g, (now() AT TIME ZONE 'utc') - (g::float8 / {n}) * interval '{days} days' AS ts,
                 (ARRAY['payment','payment','payment','payment','payment','payment','payment',
                        'topup','withdrawal','refund'])[1 + g % 10] AS kind,
                 {channels}[1 + (g / 7) % {len(CHANNELS)}] AS ch, 1000 + (g::bigint * 7919) % 500000 AS amt,
                 random() AS r, {array}[1 + g % {MERCHANTS}] AS merchant
          FROM generate_series(1, {n}) g),
        typed AS (
          SELECT *, CASE WHEN r < 0.85 THEN 'succeeded' WHEN r < 0.95 THEN 'failed'
                         WHEN r < 0.99 THEN 'processing' ELSE 'pending' END AS status FROM src)
        INSERT INTO operations (id, merchant_id, livemode, kind, status, version, amount, currency, fee,
          amount_refunded, reference, idempotency_key, metadata, customer, payment_method, routing, channel,
          channel_reference, failure_code, failure_message, next_query_at, query_count, review, created_at,
          updated_at)
        SELECT (CASE kind WHEN 'payment' THEN 'pay_' WHEN 'topup' THEN 'top_' WHEN 'withdrawal' THEN 'wd_'
                ELSE 're_' END) || lpad(to_hex(g), 24, '0'), merchant, false, kind, status, 2, amt, 'USD',
               CASE WHEN status = 'failed' THEN 0 ELSE amt * 3 / 100 END, 0, 'ref_' || g, 'idem_' || g, '{{}}',
               json_build_object('id', 'cus_' || (g % 100000), 'country', 'US'),
               '{{"type": "card", "brand": "visa", "last4": "4242"}}',
               json_build_object('ruleset_version', 1, 'matched_rules', json_build_array('default-route'),
                                 'candidates', json_build_array(ch), 'dropped', json_build_array(), 'channel', ch),
               ch, 'ch_' || g,
               CASE WHEN status = 'failed' THEN (ARRAY['card_declined','do_not_honor','insufficient_funds',
                 'channel_error'])[1 + g % 4] END,
               CASE WHEN status = 'failed' THEN 'declined by the channel' END,
               CASE WHEN status = 'processing' THEN ts + interval '30 seconds' END, 0, false, ts, ts
        FROM typed"""),
        ("attempts", """
        INSERT INTO attempts (id, operation_id, seq, channel, status, error_code, channel_reference, created_at,
                              updated_at)
        SELECT 'att_' || substr(id, strpos(id, '_') + 1), id, 1, channel,
               CASE status WHEN 'pending' THEN 'processing' ELSE status END, failure_code, channel_reference,
               created_at, updated_at FROM operations"""),
        ("recent", f"""
        CREATE TEMP TABLE recent AS SELECT id, merchant_id, kind, status, channel, channel_reference, created_at
        FROM operations ORDER BY created_at DESC LIMIT {RECENT}"""),
        ("channel_callbacks", """
        INSERT INTO channel_callbacks (id, channel, dedupe_key, reference, channel_reference, status, body, outcome,
                                       received_at, processed_at)
        SELECT 'cb_' || substr(id, strpos(id, '_') + 1), channel, channel || ':' || channel_reference, id,
               channel_reference, status, '{}', 'applied', created_at + interval '1 second',
               created_at + interval '2 seconds'
        FROM recent WHERE status IN ('succeeded', 'failed')"""),
        ("events", """
        INSERT INTO events (id, merchant_id, livemode, type, object_id, data, relayed, created_at)
        SELECT 'evt_' || substr(id, strpos(id, '_') + 1), merchant_id, false, kind || '.' || status, id,
               json_build_object('id', id, 'status', status), true, created_at + interval '2 seconds'
        FROM recent WHERE status IN ('succeeded', 'failed')"""),
        ("webhook_endpoints", f"""
        INSERT INTO webhook_endpoints (id, merchant_id, livemode, url, enabled_events, metadata, created_at)
        SELECT 'we_' || lpad(to_hex(g), 24, '0'), {array}[g], false, 'http://127.0.0.1:9/hooks/' || g, '["*"]',
               '{{}}', (now() AT TIME ZONE 'utc') - interval '{days + 1} days'
        FROM generate_series(1, {MERCHANTS}) g"""),
        ("webhook_deliveries", """
        INSERT INTO webhook_deliveries (id, merchant_id, livemode, event_id, endpoint_id, generation, status,
          attempts, next_attempt_at, last_status_code, created_at, updated_at, completed_at)
        SELECT 'whd_' || substr(e.id, 5), e.merchant_id, false, e.id, w.id, 0,
               CASE WHEN random() < 0.98 THEN 'succeeded' WHEN random() < 0.5 THEN 'failed' ELSE 'pending' END,
               1, e.created_at, 200, e.created_at, e.created_at, e.created_at + interval '1 second'
        FROM events e JOIN webhook_endpoints w ON w.merchant_id = e.merchant_id"""),
        ("webhook_attempts", """
        INSERT INTO webhook_attempts (delivery_id, number, started_at, status_code, latency_ms)
        SELECT id, 1, created_at, CASE status WHEN 'succeeded' THEN 200 ELSE 500 END, 40
        FROM webhook_deliveries"""),
        ("accounts", f"""
        INSERT INTO accounts (id, merchant_id, livemode, kind, currency, customer, reference, metadata, available,
                              pending, version, created_at)
        SELECT 'acct_' || lpad(to_hex(g), 24, '0'), {array}[1 + g % {MERCHANTS}], false, 'customer', 'USD',
               json_build_object('id', 'cus_' || g), 'wallet-' || g, '{{}}', 0, 0, 0,
               (now() AT TIME ZONE 'utc') - interval '{days + 1} days'
        FROM generate_series(0, {2 * MERCHANTS - 1}) g"""),
        ("journal_entries", f"""
        INSERT INTO journal_entries (id, merchant_id, kind, source_id, created_at)
        SELECT 'je_' || substr(id, strpos(id, '_') + 1), merchant_id, kind, id, created_at + interval '2 seconds'
        FROM recent WHERE status = 'succeeded' LIMIT {RECENT // 2}"""),
        ("ledger_lines", f"""
        INSERT INTO ledger_lines (id, entry_id, account_id, balance_type, amount, currency, created_at)
        SELECT 'll_' || side || substr(j.id, 4), j.id, 'acct_' || lpad(to_hex(m.k * 2 + side), 24, '0'),
               'available', CASE side WHEN 0 THEN o.amount ELSE -o.amount END, 'USD', j.created_at
        FROM journal_entries j JOIN operations o ON o.id = j.source_id
        JOIN (SELECT m, k - 1 AS k FROM unnest({array}) WITH ORDINALITY AS x(m, k)) m ON m.m = j.merchant_id
        CROSS JOIN (VALUES (0), (1)) AS s(side)"""),
        ("transfers", f"""
        INSERT INTO transfers (id, merchant_id, livemode, from_account_id, to_account_id, amount, currency,
                               reference, metadata, status, created_at)
        SELECT 'tr_' || lpad(to_hex(g), 24, '0'), {array}[1 + g % {MERCHANTS}], false,
               'acct_' || lpad(to_hex((g % {MERCHANTS}) * 2), 24, '0'),
               'acct_' || lpad(to_hex((g % {MERCHANTS}) * 2 + 1), 24, '0'), 100 + g % 1000, 'USD', 'tref_' || g,
               '{{}}', 'succeeded', (now() AT TIME ZONE 'utc') - (g::float8 / 50000) * interval '{days} days'
        FROM generate_series(1, 50000) g"""),
        ("reconciliation_runs", f"""
        INSERT INTO reconciliation_runs (id, channel, day, mode, window_start, window_end, statement_lines, matched,
                                         issues, issue_count, channel_fees, created_at)
        SELECT 'rr_' || lpad(to_hex(g), 24, '0'), {channels}[1 + g % {len(CHANNELS)}],
               to_char((now() AT TIME ZONE 'utc') - g * interval '4 minutes', 'YYYY-MM-DD'), 'continuous',
               (now() AT TIME ZONE 'utc') - (g + 1) * interval '4 minutes',
               (now() AT TIME ZONE 'utc') - g * interval '4 minutes', 100, 99 + (g % 2),
               '[]', 1 - g % 2, 300, (now() AT TIME ZONE 'utc') - g * interval '4 minutes'
        FROM generate_series(1, 10000) g"""),
        ("reconciliation_issues", f"""
        INSERT INTO reconciliation_issues (id, run_id, channel, kind, channel_reference, operation_id, ours, theirs,
                                           status, resolved_by, resolved_at, resolution_note, created_at)
        SELECT 'ri_' || lpad(to_hex(g), 24, '0'), 'rr_' || lpad(to_hex(g * 2), 24, '0'),
               {channels}[1 + g % {len(CHANNELS)}], (ARRAY['status_mismatch','fee_mismatch',
               'missing_in_payrouter'])[1 + g % 3], 'ch_' || (g * 37), NULL,
               json_build_object('status', 'failed'), json_build_object('status', 'succeeded'),
               CASE WHEN g % 5 = 0 THEN 'open' ELSE 'resolved' END,
               CASE WHEN g % 5 = 0 THEN NULL ELSE 'ops' END,
               CASE WHEN g % 5 = 0 THEN NULL ELSE (now() AT TIME ZONE 'utc') END,
               CASE WHEN g % 5 = 0 THEN NULL ELSE 'checked with the channel' END,
               (now() AT TIME ZONE 'utc') - g * interval '8 minutes'
        FROM generate_series(1, 5000) g"""),
        ("audit_log", f"""
        INSERT INTO audit_log (actor, action, target, before, after, reason, created_at)
        SELECT (ARRAY['olga','pete','ann'])[1 + g % 3], 'switch.set', 'channel:' || {channels}[1 + g % 4],
               json_build_object('on', false), json_build_object('on', true), 'bench',
               (now() AT TIME ZONE 'utc') - g * interval '1 minute'
        FROM generate_series(1, 10000) g"""),
    ]
    timings = {}
    with get_engine().connect() as conn:
        conn.execute(text("SET synchronous_commit = off"))
        conn.execute(text("SELECT setseed(0.12)"))
        for name, sql in steps:
            started = time.perf_counter()
            conn.execute(text(sql))
            conn.commit()
            timings[name] = time.perf_counter() - started
            print(f"  {name}: {timings[name]:.1f} s", flush=True)
        started = time.perf_counter()
        conn.execute(text("ANALYZE"))
        conn.commit()
        print(f"  analyze: {time.perf_counter() - started:.1f} s", flush=True)
        picks = conn.execute(text("""
            SELECT (SELECT id FROM recent WHERE status = 'succeeded' ORDER BY created_at DESC LIMIT 1 OFFSET 500),
                   (SELECT reference FROM operations WHERE id = (SELECT id FROM recent ORDER BY created_at LIMIT 1)),
                   (SELECT id FROM webhook_endpoints LIMIT 1),
                   (SELECT id FROM transfers ORDER BY created_at DESC LIMIT 1 OFFSET 100)""")).one()
    return {"merchant": merchants[7], "operation": picks[0], "reference": picks[1], "endpoint": picks[2],
            "transfer": picks[3], "fill_seconds": sum(timings.values())}


def _token(page: str) -> str:
    return re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)


def pages(ids: dict) -> list[tuple[str, str]]:
    from datetime import date, timedelta

    day = (date.today() - timedelta(days=3)).isoformat()
    return [
        ("Dashboard", "/admin/"),
        ("Transactions: newest", "/admin/transactions/"),
        ("Transactions: by id", f"/admin/transactions/?id={ids['operation']}"),
        ("Transactions: by reference", f"/admin/transactions/?reference={ids['reference']}"),
        ("Transactions: by customer", "/admin/transactions/?customer=cus_4242"),
        ("Transactions: by status (failed)", "/admin/transactions/?status=failed"),
        ("Transactions: status pending (rare)", "/admin/transactions/?status=pending"),
        ("Transactions: kind + channel", "/admin/transactions/?kind=withdrawal&channel=acq_beta"),
        ("Transactions: kind + status + channel", "/admin/transactions/?kind=refund&status=failed&channel=acq_gamma"),
        ("Transactions: merchant", f"/admin/transactions/?merchant={ids['merchant']}"),
        ("Transactions: one day", f"/admin/transactions/?from={day}&to={day}"),
        ("Transactions: transfers", "/admin/transactions/?kind=transfer"),
        ("Transactions: page 2", None),  # filled in from page 1's "Older" link
        ("Operation timeline", f"/admin/transactions/{ids['operation']}"),
        ("Transfer timeline", f"/admin/transactions/{ids['transfer']}"),
        ("Reconciliation", "/admin/reconciliation/"),
        ("Reconciliation: resolved", "/admin/reconciliation/?status=resolved"),
        ("Webhooks", "/admin/webhooks/"),
        ("Webhooks: failed", "/admin/webhooks/?status=failed"),
        ("Webhooks: one endpoint", f"/admin/webhooks/?endpoint={ids['endpoint']}"),
        ("Rules", "/admin/rules/"),
        ("Switches", "/admin/switches/"),
        ("Channels", "/admin/channels/"),
        ("Users", "/admin/users/"),
        ("Audit log", "/admin/audit/"),
    ]


def measure(config: Config, ids: dict, requests: int) -> list[tuple[str, str, int, list[float]]]:
    import html
    import logging

    from app.entrypoints.web import create_app
    from app.services import admin_users

    admin_users.create_user("bench-admin", PASSWORD, "admin", actor="bench")
    logging.getLogger("payrouter").setLevel(logging.WARNING)  # one access-log line per request, otherwise
    client = create_app(config).test_client()
    login = client.get("/admin/login/").get_data(as_text=True)
    answer = client.post("/admin/login/", data={"username": "bench-admin", "password": PASSWORD,
                                               "csrf_token": _token(login)})
    assert answer.status_code == 302, answer.status_code
    first = client.get("/admin/transactions/").get_data(as_text=True)
    older = re.search(r'href="([^"]+)" id="transactions-older"', first)
    out = []
    for name, path in pages(ids):
        if path is None:
            path = "/admin/transactions/" + html.unescape(older.group(1)) if older else "/admin/transactions/"
        status = 0
        for _ in range(2):
            status = client.get(path).status_code
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            status = client.get(path).status_code
            samples.append((time.perf_counter() - started) * 1000)
        out.append((name, path, status, samples))
        print(f"  {name}: {status} p95 {p95(samples):.1f} ms", flush=True)
    return out


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18] if len(samples) > 1 else samples[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1/payrouter_bench_admin")
    parser.add_argument("--operations", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the database (default: dropped at the end)")
    args = parser.parse_args()
    url = normalize_database_url(args.database_url)
    recreate_database(url)
    try:
        import os
        import tempfile

        from app.entrypoints.bootstrap import init

        var = Path(tempfile.mkdtemp(prefix="payrouter-bench-admin-"))
        env = {**os.environ, "DATABASE_URL": url, "PAYROUTER_VAR_DIR": str(var), "PAYROUTER_LOG_FORMAT": "text"}
        config = Config.from_env(env).with_(reconcile_interval=0)
        set_config(config)
        init()  # as `payrouter init`: schema, channel secrets, the default rules
        print(f"filling {args.operations:,} operations over {args.days} days …", flush=True)
        started = time.perf_counter()
        ids = fill(args.operations, args.days)
        print(f"filled in {time.perf_counter() - started:.0f} s; timing {args.requests} requests a page …",
              flush=True)
        results = measure(config, ids, args.requests)
    finally:
        if not args.keep:
            drop_database(url)
    print("\n| page | status | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|")
    failed = False
    for name, _path, status, samples in results:
        bad = status != 200 or p95(samples) >= BUDGET_MS
        failed |= bad
        print(f"| {name} | {status} | {statistics.median(samples):.1f} | {p95(samples):.1f} | {max(samples):.1f} |"
              + (" **over budget**" if bad else ""))
    print(f"\nevery page p95 < {BUDGET_MS:.0f} ms: {'no' if failed else 'yes'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
