"""Scale-out: payments per second with 1, 2, 4 API processes, callbacks per second with 1, 2, 4
workers, against one PostgreSQL and one Redis; where the knee is and what saturates first.

API processes (gunicorn gthread workers, 8 threads each) and RQ workers are pinned to API_CPUS;
the sandbox PSP and wrk to OTHER_CPUS (another company's server, and the load generator: neither
is our CPU). Each point records the CPU each process group used over the run, as a share of one
core (1.0 = one core busy the whole run), so the saturated part shows: the API's pinned cores,
PostgreSQL's backends for this database, Redis.

    DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_scale REDIS_URL=redis://127.0.0.1:6379/12 \
        .venv/bin/python bench/scale_out.py [--duration 15] [--callbacks 3000] [--plot docs/scale_out.png]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

from common import ROOT, postgres_bench, setup_merchant, start, stop
from fixed_reference import API_CPUS, OTHER_CPUS, PAYMENT_BODY, cpu_snapshot, pinned, wrk

COUNTS = (1, 2, 4)


def payments_point(env: dict, secret: str, processes: int, duration: int, database: str) -> dict:
    proc, base = start(pinned(API_CPUS, [sys.executable, "-m", "app", "serve", "--port", "{port}", "--workers",
                                         str(processes), "--threads", "8"]), env, "/readyz")
    try:
        wrk(base, "/v1/payments", PAYMENT_BODY, secret, 3, 16, uuid.uuid4().hex[:12])  # warm up
        groups = {"API": proc.pid, "PostgreSQL": f"postgres:{database}", "Redis": "redis-server"}
        runs = []
        for _ in range(3):
            before, t0 = cpu_snapshot(groups), time.monotonic()
            result = wrk(base, "/v1/payments", PAYMENT_BODY, secret, duration, 16, uuid.uuid4().hex[:12])
            after, elapsed = cpu_snapshot(groups), time.monotonic() - t0
            created = sum(s["n"] for s in result["statuses"] if s["status"] == 201)
            runs.append({"rps": created / (result["duration_us"] / 1e6), "p99_ms": result["p99_us"] / 1000,
                         "bad": result["requests"] - created,
                         "cores": {g: (after[g] - before[g]) / elapsed for g in groups}})
    finally:
        stop(proc)
    best = sorted(runs, key=lambda r: r["rps"])[1]  # the median run
    return {"processes": processes, **best}


def load_callbacks(n: int) -> list[dict]:
    """n payments left processing, each with an open attempt (committed now), and the rows of
    their n callbacks, not yet stored: the caller stores them once the clock runs, so no worker
    can apply one before it starts."""
    from app.adapters.db import unit_of_work
    from app.adapters.models import Attempt, Merchant, Operation, new_id

    with unit_of_work() as session:
        merchant = Merchant(id=new_id("mer"), name=f"scale-{uuid.uuid4().hex[:6]}")
        session.add(merchant)
        session.flush()
        ops = [Operation(id=new_id("pay"), merchant_id=merchant.id, kind="payment", status="processing", version=1,
                         amount=1000, currency="USD", fee=30, reference=uuid.uuid4().hex, channel="sandbox",
                         routing={"candidates": ["sandbox"], "channel": "sandbox"}, metadata_={}) for _ in range(n)]
        session.add_all(ops)
        session.flush()
        session.add_all([Attempt(id=new_id("att"), operation_id=op.id, seq=1, channel="sandbox", status="processing",
                                 channel_reference=None) for op in ops])
    return [{"id": new_id("cb"), "channel": "sandbox", "dedupe_key": uuid.uuid4().hex, "reference": op_id,
             "channel_reference": f"sbx_{op_id}", "status": "succeeded", "body": "{}"}
            for op_id in [op.id for op in ops]]


def callbacks_point(env: dict, workers: int, n: int, database: str) -> dict:
    """Time for ``workers`` worker processes to apply n callbacks: the workers start and settle,
    then the clock starts, the n callbacks are stored in one INSERT (inside the timed window) and
    n/50 drain jobs queued (callbacks arriving in bursts), with the drain kicked while waiting."""
    from sqlalchemy import func, insert, select

    from app.adapters import jobs
    from app.adapters.db import read_only, unit_of_work
    from app.adapters.models import ChannelCallback
    from app.adapters.redis_conn import get_redis
    from app.services import callbacks

    rows = load_callbacks(n)
    ids = [row["id"] for row in rows]
    get_redis().delete(callbacks.DRAIN_FLAG)
    groups = {"PostgreSQL": f"postgres:{database}", "Redis": "redis-server"}
    procs = [subprocess.Popen(pinned(API_CPUS, [sys.executable, "-m", "app", "worker", "core"]), env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    try:
        time.sleep(3)  # the workers import and connect before the clock starts
        before = cpu_snapshot(groups)
        worker_cpu = [cpu_snapshot({"w": p.pid})["w"] for p in procs]
        t0 = time.monotonic()
        with unit_of_work() as session:
            session.execute(insert(ChannelCallback), rows)
        for _ in range(max(1, n // 50)):
            jobs.enqueue(jobs.CORE, "app.services.callbacks.drain")
        while True:
            with read_only() as session:
                left = session.scalar(select(func.count()).select_from(ChannelCallback)
                                      .where(ChannelCallback.id.in_(ids), ChannelCallback.outcome.is_(None)))
            if not left:
                break
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"{left} callbacks not applied after 300 s")
            callbacks.kick_drain()
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        after = cpu_snapshot(groups)
        spent = sum(cpu_snapshot({"w": p.pid})["w"] - w for p, w in zip(procs, worker_cpu, strict=True))
    finally:
        for p in procs:
            stop(p)
    cores = {g: (after[g] - before[g]) / elapsed for g in groups}
    cores["workers"] = spent / elapsed
    return {"workers": workers, "per_second": n / elapsed, "cores": cores}


def plot(path: str, api: list[dict], work: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([p["processes"] for p in api], [p["rps"] for p in api], "o-", label="payments/s")
    left.set_xlabel(f"API processes (pinned to CPU {API_CPUS})")
    left.set_ylabel("payments per second")
    left.set_xticks(COUNTS)
    twin = left.twinx()
    for group, style in (("API", "s--"), ("PostgreSQL", "^--"), ("Redis", "v--")):
        twin.plot([p["processes"] for p in api], [p["cores"][group] for p in api], style, alpha=0.6, label=group)
    twin.set_ylabel("cores busy")
    left.set_ylim(bottom=0)
    twin.set_ylim(0, 1.05)
    left.legend(loc="upper left")
    twin.legend(loc="lower right", fontsize="small")
    right.plot([p["workers"] for p in work], [p["per_second"] for p in work], "o-", label="callbacks/s")
    right.set_xlabel(f"RQ worker processes (pinned to CPU {API_CPUS})")
    right.set_ylabel("callbacks applied per second")
    right.set_xticks(COUNTS)
    twin = right.twinx()
    for group, style in (("workers", "s--"), ("PostgreSQL", "^--"), ("Redis", "v--")):
        twin.plot([p["workers"] for p in work], [p["cores"][group] for p in work], style, alpha=0.6, label=group)
    twin.set_ylabel("cores busy")
    right.set_ylim(bottom=0)
    twin.set_ylim(0, 1.05)
    right.legend(loc="upper left")
    twin.legend(loc="lower right", fontsize="small")
    fig.suptitle("PayRouter scale-out on one machine (one PostgreSQL, one Redis)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--callbacks", type=int, default=3000)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "scale_out.png"))
    args = parser.parse_args()
    bench = postgres_bench()
    if bench is None:
        return 2
    database, sandbox_port, env = bench.database, bench.sandbox_port, bench.env
    secret, _ids = setup_merchant(2)
    sandbox, _ = start(pinned(OTHER_CPUS, [sys.executable, "-m", "app", "sandbox", "--port", "{port}"]), env,
                       "/healthz", port=sandbox_port)
    try:
        api = [payments_point(env, secret, n, args.duration, database) for n in COUNTS]
    finally:
        stop(sandbox)
    work = [callbacks_point(env, n, args.callbacks, database) for n in COUNTS]
    print(f"API processes and workers on CPU {API_CPUS}; sandbox and wrk (-t2 -c16, {args.duration} s × 3, "
          f"median run) on CPU {OTHER_CPUS}; cores busy = CPU seconds / wall seconds\n")
    print("| API processes | payments/s | p99 ms | not 201 | cores busy: API | PostgreSQL | Redis |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for p in api:
        c = p["cores"]
        print(f"| {p['processes']} | {p['rps']:.0f} | {p['p99_ms']:.0f} | {p['bad']} | {c['API']:.2f} | "
              f"{c['PostgreSQL']:.2f} | {c['Redis']:.2f} |")
    print(f"\n| RQ workers | callbacks/s ({args.callbacks} each) | cores busy: workers | PostgreSQL | Redis |")
    print("| --- | --- | --- | --- | --- |")
    for w in work:
        c = w["cores"]
        print(f"| {w['workers']} | {w['per_second']:.0f} | {c['workers']:.2f} | {c['PostgreSQL']:.2f} | "
              f"{c['Redis']:.2f} |")
    with open(os.path.splitext(args.plot)[0] + ".json", "w") as out:  # the plot's data, to draw it again
        json.dump({"payments": api, "callbacks": work}, out, indent=2)
    plot(args.plot, api, work)
    print(f"\nplot: {os.path.relpath(args.plot, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
