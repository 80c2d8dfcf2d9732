"""What metrics and rate limits add to one API request, measured piece by piece, then end to end.

    REDIS_URL=redis://127.0.0.1:6379/13 .venv/bin/python bench/hot_path_cost.py [--calls 5000]
    DATABASE_URL=postgresql://… REDIS_URL=redis://… .venv/bin/python bench/hot_path_cost.py --http 3000

Times, in this process (one thread, after a warm-up), per call: the rate limit's check on Redis
(one EVALSHA round trip) and in memory (the fallback), and the metrics a request moves
(``observe_request``: a counter and a histogram; an operation's count on commit) in
prometheus-client's multiprocess mode, as under ``payrouter serve``. Prints mean, p50, p99 in µs.
The limiter's keys are deleted at the end. ``--http N``: ``payrouter serve`` (1 worker, 1 thread)
with PAYROUTER_RATE_LIMIT=0 and then at its default, N keep-alive GETs of /v1/events?limit=1 each,
one client, alternating rounds; it creates one merchant (and its key) in the database.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_OWN_DIR = None if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else tempfile.mkdtemp(prefix="payrouter-metrics-")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _OWN_DIR or "")


def timed(label: str, call, calls: int) -> None:
    for _ in range(min(200, calls)):
        call()
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        took.append((time.perf_counter() - started) * 1e6)
    took.sort()
    print(f"{label:<44} mean {statistics.fmean(took):8.1f} µs  p50 {took[len(took) // 2]:8.1f} µs  "
          f"p99 {took[int(len(took) * 0.99)]:8.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--http", type=int, default=0, help="also N requests end to end, limit off and on")
    args = parser.parse_args()
    from limits.storage import MemoryStorage
    from limits.strategies import SlidingWindowCounterRateLimiter

    from app.adapters import metrics, ratelimit, redis_conn
    from app.config import Config, set_config

    config = Config.from_env().with_(rate_limit=10 ** 9)  # never refuses: every call is a full hit
    set_config(config)
    print(f"Redis: {redis_conn.redis_url(config).split('@')[-1]}, "
          f"multiprocess dir: {os.environ['PROMETHEUS_MULTIPROC_DIR']}")
    key = f"key_bench_{uuid.uuid4().hex[:8]}"
    item = ratelimit._item(config.rate_limit)
    timed("rate limit, Redis (ratelimit.check)", lambda: ratelimit.check(key), args.calls)
    memory = SlidingWindowCounterRateLimiter(MemoryStorage())
    timed("rate limit, in memory (the fallback)", lambda: memory.hit(item, key), args.calls)
    timed("metrics.observe_request", lambda: metrics.observe_request("POST", "/v1/payments", 201, 0.01), args.calls)
    timed("operations counter inc", lambda: metrics.OPERATIONS.labels("payment", "succeeded", "sandbox").inc(),
          args.calls)
    client = redis_conn.get_redis()
    for found in client.scan_iter(f"{ratelimit.PREFIX}*{key}*"):
        client.delete(found)
    if args.http:
        end_to_end(config, args.http)
    if _OWN_DIR:
        shutil.rmtree(_OWN_DIR, ignore_errors=True)


def end_to_end(config, requests_per_round: int, rounds: int = 3) -> None:
    import subprocess

    import requests

    from app.adapters.db import unit_of_work
    from app.services.merchants import create_merchant
    from tests.live import free_port, process_env, wait_http

    with unit_of_work() as session:
        _merchant, issued = create_merchant(session, "hot-path-bench", None, "test")
    headers = {"Authorization": f"Bearer {issued.secret}"}
    took = {"0": [], "1000000": []}  # on, but never refusing: the cost of the check itself
    for _ in range(rounds):
        for limit in took:
            port = free_port()
            env = process_env(config, PAYROUTER_RATE_LIMIT=limit)
            proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "1",
                                     "--threads", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                base = f"http://127.0.0.1:{port}"
                wait_http(base + "/readyz", proc=proc)
                with requests.Session() as http:
                    for _ in range(200):  # warm-up
                        http.get(base + "/v1/events?limit=1", headers=headers)
                    for _ in range(requests_per_round):
                        started = time.perf_counter()
                        response = http.get(base + "/v1/events?limit=1", headers=headers)
                        took[limit].append((time.perf_counter() - started) * 1e6)
                        assert response.status_code == 200, response.status_code
            finally:
                proc.terminate()
                proc.wait(timeout=15)
    for limit, values in took.items():
        values.sort()
        print(f"GET /v1/events, PAYROUTER_RATE_LIMIT={limit:<7} mean {statistics.fmean(values):8.1f} µs  "
              f"p50 {values[len(values) // 2]:8.1f} µs  p99 {values[int(len(values) * 0.99)]:8.1f} µs")


if __name__ == "__main__":
    main()
