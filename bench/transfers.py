"""Transfers per second and p50/p99 over HTTP on PostgreSQL, beside the bare-stack baseline.

    DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_bench REDIS_URL=redis://127.0.0.1:6379/9 \
        .venv/bin/python bench/transfers.py [--clients 16] [--requests 100] [--rounds 3]

Both servers run under gunicorn with the same settings (bench/common.py SERVER). The baseline
executes as many SQL statements as one transfer does (counted, not guessed), in one
transaction. Rounds alternate baseline / PayRouter; medians and the ratio are printed.
"""
from __future__ import annotations

import argparse
import sys
import uuid

from common import (
    SERVER,
    Result,
    StatementCount,
    bench_env,
    count_statements,
    load,
    report,
    start,
    start_baselines,
    stop,
)

from app.config import Config, set_config


def count_statements_per_transfer(config: Config) -> tuple[StatementCount, str, list[str]]:
    """Set up a merchant with funded accounts and count the SQL one transfer request runs."""
    from app.adapters import migrate
    from app.adapters.db import get_engine, unit_of_work
    from app.entrypoints.web import create_app
    from app.services import accounts
    from app.services.merchants import create_merchant

    migrate.upgrade(config)
    with unit_of_work() as session:
        merchant, issued = create_merchant(session, "bench")
        ids = []
        for _ in range(64):
            acct = accounts.create_account(session, merchant, {"currency": "USD", "customer": {"id": "c"}})
            ids.append(acct.id)
        session.flush()
        for acct_id in ids:
            accounts.fund_for_testing(session, merchant, acct_id, 10**12)
    client = create_app(config).test_client()

    def transfer(a: str, b: str):
        return client.post("/v1/transfers", json={"from_account": a, "to_account": b, "amount": 1, "currency": "USD",
                                                  "reference": uuid.uuid4().hex},
                           headers={"Authorization": f"Bearer {issued.secret}", "Idempotency-Key": uuid.uuid4().hex})

    transfer(ids[2], ids[3])
    responses = []
    count = count_statements(get_engine(config), lambda: responses.append(transfer(ids[0], ids[1])))
    assert responses[0].status_code == 201, responses[0].get_json()
    return count, issued.secret, ids


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=100, help="per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = Config.from_env()
    if not config.database_url.startswith("postgresql"):
        print("set DATABASE_URL to a PostgreSQL database", file=sys.stderr)
        return 2
    set_config(config)
    statements, secret, ids = count_statements_per_transfer(config)
    env = bench_env()
    sys.path.insert(0, "bench")
    import baseline_app

    baseline_app.setup_tables()

    def transfer(session, i, j):
        body = {"from_account": ids[2 * i % 64], "to_account": ids[(2 * i + 1) % 64], "amount": 1,
                "currency": "USD", "reference": uuid.uuid4().hex}
        return session.post(base_pr + "/v1/transfers", json=body, timeout=60, headers={
            "Authorization": f"Bearer {secret}", "Idempotency-Key": uuid.uuid4().hex}).status_code

    pr_proc, base_pr = start([sys.executable, "-m", "app", "serve", "--port", "{port}", "--workers",
                              str(SERVER["workers"]), "--threads", str(SERVER["threads"])], env, "/readyz")
    baselines: dict = {}

    def bare(base: str):
        def send(session, i, j):
            body = {"from": f"a{2 * i % 64}", "to": f"a{(2 * i + 1) % 64}", "amount": 1,
                    "reference": uuid.uuid4().hex}
            return session.post(base + "/bench", json=body, timeout=60).status_code
        return send

    rows: dict[str, list[Result]] = {}
    try:
        start_baselines(env, statements, baselines)
        loads = {name: bare(base) for name, (_proc, base) in baselines.items()}
        loads["payrouter"] = transfer
        rows = {name: [] for name in loads}
        for send in loads.values():  # warm up
            load(send, args.clients, 10)
        for _ in range(args.rounds):
            for name, send in loads.items():
                rows[name].append(load(send, args.clients, args.requests))
    finally:
        stop(pr_proc)
        for proc, _base in baselines.values():
            stop(proc)
    report("transfer", statements, args.clients, args.requests, args.rounds, rows, "payrouter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
