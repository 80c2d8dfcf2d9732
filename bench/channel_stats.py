"""The "Channels" page's figures (app.services.channels.stats: one grouped query over the attempts
of the last 15 minutes) timed with N attempts in the window and M older ones, on PostgreSQL.

    .venv/bin/python bench/channel_stats.py [--recent 90000] [--older 1000000]
        [--database-url postgresql://postgres@127.0.0.1/payrouter_bench_channel_stats]

Builds its own database (migrated as `payrouter init` does, dropped at the end), inserts the
attempts with INSERT … SELECT generate_series (3 channels; 1 in 6 still processing and untimed),
then times 30 calls after one warm-up. Prints p50/p95/max and each channel's figures.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from app.config import Config, normalize_database_url, set_config  # noqa: E402


def _admin_engine(url: str):
    return create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")


def fill(recent: int, older: int) -> None:
    from app.adapters.db import get_engine, unit_of_work
    from app.services.merchants import create_merchant

    with unit_of_work() as session:
        merchant = create_merchant(session, "bench")[0].id
    with get_engine().begin() as conn:
        conn.execute(text(f"""
          INSERT INTO operations (id, merchant_id, livemode, kind, status, version, amount, currency, fee,
            amount_refunded, reference, metadata, routing, query_count, review, created_at, updated_at)
          SELECT 'op_' || g, :m, false, 'payment', 'succeeded', 1, 1000, 'USD', 0, 0, 'r' || g, '{{}}', '{{}}', 0,
                 false, now() AT TIME ZONE 'utc', now() AT TIME ZONE 'utc'
          FROM generate_series(1, {recent + older}) g"""), {"m": merchant})
        conn.execute(text(f"""
          INSERT INTO attempts (id, operation_id, seq, channel, status, duration_ms, created_at, updated_at)
          SELECT 'att_' || g, 'op_' || g, 1, (ARRAY['sandbox','acq_alpha','acq_beta'])[1 + g % 3],
                 (ARRAY['succeeded','succeeded','succeeded','failed','unknown','processing'])[1 + (g / 3) % 6],
                 CASE WHEN (g / 3) % 6 = 5 THEN NULL ELSE 20 + (g::bigint * 7919) % 900 END,
                 CASE WHEN g <= {recent}
                      THEN (now() AT TIME ZONE 'utc') - (g::float8 / {recent}) * interval '14 minutes'
                      ELSE (now() AT TIME ZONE 'utc') - interval '20 minutes'
                           - (g::float8 / {older + 1}) * interval '30 days' END,
                 now() AT TIME ZONE 'utc'
          FROM generate_series(1, {recent + older}) g"""))
        conn.execute(text("ANALYZE attempts"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1/payrouter_bench_channel_stats")
    parser.add_argument("--recent", type=int, default=90_000, help="attempts in the last 15 minutes")
    parser.add_argument("--older", type=int, default=1_000_000, help="attempts before them")
    args = parser.parse_args()
    url = normalize_database_url(args.database_url)
    name = url.rsplit("/", 1)[1]
    admin = _admin_engine(url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        import os
        import tempfile

        from app.adapters import migrate
        from app.services import channels

        env = {**os.environ, "DATABASE_URL": url,
               "PAYROUTER_VAR_DIR": tempfile.mkdtemp(prefix="payrouter-bench-stats-")}
        set_config(Config.from_env(env))
        migrate.upgrade()
        fill(args.recent, args.older)
        channels.stats()
        samples = []
        for _ in range(30):
            started = time.perf_counter()
            found = channels.stats()
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        from app.adapters import db

        db.dispose_all()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(f"{args.recent:,} attempts in the window, {args.older:,} older: stats() p50 "
          f"{statistics.median(samples):.1f} ms, p95 {statistics.quantiles(samples, n=20, method='inclusive')[18]:.1f}"
          f" ms, max {max(samples):.1f} ms")
    for channel_id, figures in sorted(found.items()):
        print(f"  {channel_id}: volume {figures['volume']}, success rate {figures['success_rate']}, "
              f"p95 {figures['p95_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
