"""The router's own CPU per payment: the API (gunicorn, its workers) on core 0 and the sandbox PSP
(another company's host in production) on core 1, payments sent one after another, CPU seconds
of the API's processes (user + system, /proc via psutil) per payment. CPU time per request is a
steadier figure than throughput on a shared machine. Drives only the CLI, so the same script
measures any commit (``--tree`` a checkout of it).

    DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_h7 REDIS_URL=redis://127.0.0.1:6379/7 \\
        .venv/bin/python bench/router_cpu.py [--tree .] [--payments 400] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live import free_port, wait_http  # noqa: E402


def cpu_seconds(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") and os.cpu_count() > 1 else argv


def pay(session: requests.Session, url: str, secret: str) -> None:
    body = {"amount": 2000, "currency": "USD", "reference": uuid.uuid4().hex,
            "payment_method": {"type": "card", "brand": "visa", "country": "US", "last4": "4242"},
            "customer": {"id": "bench", "country": "US"}}
    answer = session.post(f"{url}/v1/payments", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": uuid.uuid4().hex})
    assert answer.status_code == 201 and answer.json()["status"] == "succeeded", answer.text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=str(ROOT), help="the checkout whose code runs")
    parser.add_argument("--payments", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgresql") or not os.environ.get("REDIS_URL"):
        print("set DATABASE_URL (PostgreSQL) and REDIS_URL", file=sys.stderr)
        return 2
    tree = Path(args.tree).resolve()
    sandbox_port, api_port = free_port(), free_port()
    env = {**os.environ, "PAYROUTER_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}", "PAYROUTER_LOG_LEVEL": "WARNING",
           "PAYROUTER_PUBLIC_URL": f"http://127.0.0.1:{api_port}"}
    python = [sys.executable, "-m", "app"]
    subprocess.run([*python, "init"], cwd=tree, env=env, check=True, capture_output=True)
    made = subprocess.run([*python, "merchant", "create", "bench-cpu", "--json"], cwd=tree, env=env, check=True,
                          capture_output=True, text=True)
    secret = json.loads(made.stdout.strip().splitlines()[-1])["secret_key"]
    procs = []
    try:
        procs.append(subprocess.Popen(pinned(1, [*python, "sandbox", "--port", str(sandbox_port)]), cwd=tree, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{sandbox_port}/healthz", timeout=30, proc=procs[-1])
        procs.append(subprocess.Popen(pinned(0, [*python, "serve", "--port", str(api_port), "--workers", "1",
                                                 "--threads", "4"]), cwd=tree, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{api_port}"
        wait_http(f"{url}/readyz", timeout=60, proc=procs[-1])
        sandbox, api = (psutil.Process(p.pid) for p in procs)
        session = requests.Session()
        for _ in range(args.warmup):
            pay(session, url, secret)
        api_ms, sandbox_ms = [], []
        for n in range(args.rounds):
            api_before, sandbox_before, started = cpu_seconds(api), cpu_seconds(sandbox), time.perf_counter()
            for _ in range(args.payments):
                pay(session, url, secret)
            elapsed = time.perf_counter() - started
            api_ms.append((cpu_seconds(api) - api_before) / args.payments * 1000)
            sandbox_ms.append((cpu_seconds(sandbox) - sandbox_before) / args.payments * 1000)
            print(f"round {n + 1}: API {api_ms[-1]:.3f} ms CPU/payment, sandbox {sandbox_ms[-1]:.3f} ms, "
                  f"{args.payments / elapsed:.0f} payments/s sequential")
        print(f"median: API {statistics.median(api_ms):.3f} ms CPU/payment, "
              f"sandbox {statistics.median(sandbox_ms):.3f} ms ({tree})")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
