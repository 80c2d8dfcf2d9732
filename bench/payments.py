"""Payments per second and p50/p99 over HTTP (sandbox answering at once), beside the bare-stack
baseline in the same run; and callbacks applied per second by one worker.

The baseline runs as many statements as one payment executes (an executemany of three ledger
lines is three statements, as PostgreSQL counts them); a second baseline, matched to the driver
calls as sessions 1-3 counted (an executemany as one), runs in the same rounds, and both ratios
are printed.

    DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_bench REDIS_URL=redis://127.0.0.1:6379/9 \
        .venv/bin/python bench/payments.py [--clients 16] [--requests 60] [--rounds 3] [--callbacks 2000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from common import (
    ROOT,
    SERVER,
    StatementCount,
    bench_env,
    count_statements,
    load,
    median,
    report,
    start,
    start_baselines,
    stop,
)

from app.config import Config, set_config
from tests.live import free_port


def setup(config: Config) -> str:
    from app.adapters.db import unit_of_work
    from app.services.merchants import create_merchant

    with unit_of_work() as session:
        _, issued = create_merchant(session, "bench-payments")
    return issued.secret


def count_payment_statements(secret: str, config: Config) -> StatementCount:
    from app.adapters.db import get_engine
    from app.entrypoints.web import create_app

    client = create_app(config).test_client()
    client.post("/v1/payments", json=body(), headers=headers(secret))  # the first creates the system accounts
    responses = []
    count = count_statements(get_engine(), lambda: responses.append(
        client.post("/v1/payments", json=body(), headers=headers(secret))))
    assert responses[0].status_code == 201 and responses[0].get_json()["status"] == "succeeded", responses[0].get_json()
    return count


def body() -> dict:
    return {"amount": 2000, "currency": "USD", "reference": uuid.uuid4().hex,
            "payment_method": {"type": "card", "brand": "visa", "country": "US", "last4": "4242"},
            "customer": {"id": "bench", "country": "US"}}


def headers(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}", "Idempotency-Key": uuid.uuid4().hex}


def callbacks_per_second(n: int) -> float:
    """n operations left processing (each with its open attempt, as a payment the channel answered
    'processing' leaves it) and their n stored callbacks; one worker applies them (timed from
    the first job to the queue running dry)."""
    from rq import Queue, SimpleWorker

    from app.adapters import jobs
    from app.adapters.db import unit_of_work
    from app.adapters.models import Attempt, ChannelCallback, Merchant, Operation, new_id
    from app.adapters.redis_conn import get_redis
    from app.entrypoints.tuning import tune_gc_for_serving
    from app.services import callbacks

    with unit_of_work() as session:
        merchant = Merchant(id=new_id("mer"), name="bench-callbacks")
        session.add(merchant)
        session.flush()
        ids, ops = [], []
        for _ in range(n):
            op = Operation(id=new_id("pay"), merchant_id=merchant.id, kind="payment", status="processing", version=1,
                           amount=1000, currency="USD", fee=30, reference=uuid.uuid4().hex, channel="sandbox",
                           routing={"candidates": ["sandbox"], "channel": "sandbox"}, metadata_={})
            session.add(op)
            ops.append(op)
        session.flush()
        for op in ops:
            attempt = Attempt(id=new_id("att"), operation_id=op.id, seq=1, channel="sandbox", status="processing",
                              channel_reference=None)
            cb = ChannelCallback(id=new_id("cb"), channel="sandbox", dedupe_key=uuid.uuid4().hex, reference=op.id,
                                 channel_reference=f"sbx_{op.id}", status="succeeded", body="{}")
            session.add_all([attempt, cb])
            ids.append(cb.id)
    queue = Queue(jobs.CORE, connection=get_redis())
    queue.empty()
    get_redis().delete(callbacks.DRAIN_FLAG)
    for _ in ids:  # as receive() does after storing each callback: at most one drain job is queued
        callbacks.kick_drain()
    tune_gc_for_serving()  # as `payrouter worker` does before it starts working
    worker = SimpleWorker([queue], connection=get_redis())
    started = time.perf_counter()
    worker.work(burst=True)
    elapsed = time.perf_counter() - started
    with unit_of_work() as session:
        from sqlalchemy import func, select

        done = session.scalar(select(func.count()).select_from(ChannelCallback)
                              .where(ChannelCallback.id.in_(ids), ChannelCallback.outcome == "applied"))
    assert done == n, f"only {done}/{n} callbacks applied"
    return n / elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callbacks", type=int, default=2000)
    args = parser.parse_args()
    sandbox_port = free_port()
    os.environ["PAYROUTER_SANDBOX_URL"] = f"http://127.0.0.1:{sandbox_port}"
    config = Config.from_env()
    if not config.database_url.startswith("postgresql") or not config.redis_url:
        print("set DATABASE_URL (PostgreSQL) and REDIS_URL", file=sys.stderr)
        return 2
    set_config(config)
    from app.entrypoints import bootstrap

    bootstrap.init()  # before the sandbox starts: it reads the channels' generated secrets from the database
    env = bench_env()
    sandbox, _ = start([sys.executable, "-m", "app", "sandbox", "--port", "{port}"], env, "/healthz",
                       port=sandbox_port)
    try:
        secret = setup(config)
        statements = count_payment_statements(secret, config)
        sys.path.insert(0, str(ROOT / "bench"))
        import baseline_app

        baseline_app.setup_tables()
        pr, base_pr = start([sys.executable, "-m", "app", "serve", "--port", "{port}", "--workers",
                             str(SERVER["workers"]), "--threads", str(SERVER["threads"])], env, "/readyz")
        baselines: dict = {}
        try:
            start_baselines(env, statements, baselines)
            def pay(session, i, j):
                return session.post(base_pr + "/v1/payments", json=body(), headers=headers(secret),
                                    timeout=60).status_code

            def bare(base):
                def send(session, i, j):
                    return session.post(base + "/bench", json={"from": f"a{2 * i % 64}", "to": f"a{(2 * i + 1) % 64}",
                                                               "amount": 1}, timeout=60).status_code
                return send

            loads = {name: bare(base) for name, (_proc, base) in baselines.items()}
            loads["payrouter payments"] = pay
            for send in loads.values():  # warm up
                load(send, args.clients, 10)
            rows = {name: [] for name in loads}
            for _ in range(args.rounds):  # alternating, so the machine's drift touches all alike
                for name, send in loads.items():
                    rows[name].append(load(send, args.clients, args.requests))
        finally:
            stop(pr)
            for proc, _base in baselines.values():
                stop(proc)
        rates = [callbacks_per_second(args.callbacks) for _ in range(args.rounds)]
    finally:
        stop(sandbox)
    report("payment", statements, args.clients, args.requests, args.rounds, rows, "payrouter payments")
    print(f"callbacks applied per second by one worker ({args.callbacks} per round): "
          f"median {median(rates):.0f} (rounds: {', '.join(f'{r:.0f}' for r in rates)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
