"""Outages, measured on a stack of its own (gunicorn 2 workers × 8 threads, the sandbox PSP, a
private PostgreSQL cluster and a private redis-server on free ports; the shared servers are never
touched):

1. request latency while Redis hangs (SIGSTOP), beside the same load with Redis up;
2. time from PostgreSQL back (``pg_ctl start`` returned) to the first 201, under a steady load;
3. revocation delay across processes: a key revoked in this process, until the API's worker
   processes refuse it — with Redis up (change notices) and with Redis hung (cache expiry alone).

    .venv/bin/python bench/outages.py [--clients 4] [--seconds 5] [--revocations 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter

import requests
from common import percentile, start, stop

from tests.live import free_port
from tests.outage_support import PrivatePostgres, PrivateRedis

CARD = {"type": "card", "brand": "visa", "country": "US", "last4": "4242"}
DEST = {"type": "bank_account", "country": "US", "last4": "1234"}


def headers(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}", "Idempotency-Key": uuid.uuid4().hex}


def payment() -> dict:
    return {"amount": 2000, "currency": "USD", "reference": uuid.uuid4().hex, "payment_method": CARD,
            "customer": {"id": "bench", "country": "US"}}


class Load:
    """``clients`` threads sending payments (and every fourth a withdrawal, which a velocity limit
    counts in Redis) back to back; each request's start, latency and status are kept."""

    def __init__(self, base: str, secret: str, account: str, clients: int):
        self.base, self.secret, self.account = base, secret, account
        self.samples: list[tuple[float, float, int, str]] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        session, n = requests.Session(), 0
        while not self.stopped.is_set():
            n += 1
            kind = "withdrawal" if n % 4 == 0 else "payment"
            body = payment() if kind == "payment" else {"account": self.account, "amount": 1, "currency": "USD",
                                                        "destination": DEST, "reference": uuid.uuid4().hex}
            started = time.time()
            t0 = time.perf_counter()
            try:
                response = session.post(f"{self.base}/v1/{kind}s", json=body, headers=headers(self.secret),
                                        timeout=30)
                status = response.status_code
                if status >= 400:  # which refusal: e.g. 402 limit_unavailable, 503 service_unavailable
                    kind += f" {status} {response.json()['error']['code']}"
            except (requests.RequestException, ValueError, KeyError):
                status = 0
            self.samples.append((started, time.perf_counter() - t0, status, kind))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc):
        self.stopped.set()
        for thread in self.threads:
            thread.join(60)

    def window(self, since: float, until: float) -> list[tuple[float, float, int, str]]:
        return [s for s in self.samples if since <= s[0] < until]


def describe(samples) -> str:
    latencies = [s[1] * 1000 for s in samples]
    statuses = Counter(s[3] if s[2] >= 400 else f"{s[3]} {s[2]}" for s in samples)
    return (f"{len(samples)} requests, p50 {statistics.median(latencies):.1f} ms, p99 "
            f"{percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms; "
            + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))


def redis_hang(base, secret, account, redis_server, clients, seconds) -> None:
    with Load(base, secret, account, clients) as load:
        time.sleep(1)
        normal_from = time.time()
        time.sleep(seconds)
        hung_from = time.time()
        redis_server.hang()
        time.sleep(seconds)
        redis_server.resume()
        resumed = time.time()
        time.sleep(1.5)
    print(f"Redis up:      {describe(load.window(normal_from, hung_from))}")
    print(f"Redis SIGSTOP: {describe(load.window(hung_from, resumed))}")
    print(f"after SIGCONT: {describe(load.window(resumed + 1, time.time()))}")


def postgres_back(base, secret, account, cluster, clients, seconds) -> None:
    with Load(base, secret, account, clients) as load:
        time.sleep(1)
        cluster.stop()
        stopped = time.time()
        time.sleep(seconds)
        launched = time.time()
        cluster.start()
        back = time.time()  # pg_ctl -w returns once the server accepts connections (and a little after)
        deadline = back + 30
        while time.time() < deadline and not any(s[2] == 201 and s[0] + s[1] >= launched for s in load.samples):
            time.sleep(0.01)
        time.sleep(0.5)
    first = min(s[0] + s[1] for s in load.samples if s[2] == 201 and s[0] + s[1] >= launched)
    print(f"PostgreSQL down {seconds} s: {describe(load.window(stopped, launched))}")
    print(f"PostgreSQL started → first 201: {(first - launched) * 1000:.0f} ms after `pg_ctl start` was launched, "
          f"which returned after {(back - launched) * 1000:.0f} ms; answers since the launch: "
          f"{dict(Counter(s[2] for s in load.samples if s[0] >= launched))}")


def one_revocation(base: str, redis_server, hung: bool) -> tuple[float, float]:
    """Four clients keep asking with a key (both worker processes hold it in their caches); this
    process revokes it. Returns, in seconds after the commit: the latest start of a request still
    answered 200, and the first 401."""
    from sqlalchemy import event

    from app.adapters.db import unit_of_work
    from app.services.merchants import create_merchant, revoke_key

    with unit_of_work() as session:
        _merchant, issued = create_merchant(session, "bench-revoke")
    answers: list[tuple[float, float, int]] = []
    stop_event = threading.Event()

    def ask():
        session = requests.Session()
        while not stop_event.is_set():
            started = time.time()
            status = session.get(f"{base}/v1/accounts?limit=1", headers={"Authorization": f"Bearer {issued.secret}"},
                                 timeout=30).status_code
            answers.append((started, time.time(), status))

    threads = [threading.Thread(target=ask, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    if hung:
        redis_server.hang()
        time.sleep(0.3)
    committed = {}
    with unit_of_work() as session:
        event.listen(session, "after_commit", lambda _s: committed.setdefault("at", time.time()))
        revoke_key(session, issued.key.id)
    deadline = time.time() + 5
    while time.time() < deadline and not any(status == 401 for _s, _e, status in answers):
        time.sleep(0.01)
    time.sleep(0.5)
    stop_event.set()
    for thread in threads:
        thread.join(30)
    if hung:
        redis_server.resume()
        time.sleep(1)
    at = committed["at"]
    last_ok = max([s - at for s, _e, status in answers if status == 200 and s >= at], default=0.0)
    return last_ok, min((e - at for _s, e, status in answers if status == 401), default=float("inf"))


def revocation(base, redis_server, hung: bool, rounds: int) -> None:
    last_ok, first_refused = zip(*(one_revocation(base, redis_server, hung) for _ in range(rounds)), strict=True)
    label = "Redis hung (SIGSTOP)" if hung else "Redis up"
    print(f"revocation, {label}, {rounds} rounds: last request answered 200 started "
          f"{max(last_ok) * 1000:.1f} ms after the commit at worst (median {statistics.median(last_ok) * 1000:.1f}); "
          f"first 401 {statistics.median(first_refused) * 1000:.1f} ms after (median)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--revocations", type=int, default=5)
    args = parser.parse_args()
    cluster, redis_server = PrivatePostgres().init(), PrivateRedis().start()
    var = tempfile.mkdtemp(prefix="payrouter-bench-outages-")
    sandbox_port = free_port()
    os.environ.update({"DATABASE_URL": cluster.url, "REDIS_URL": redis_server.url, "PAYROUTER_VAR_DIR": var,
                       "PAYROUTER_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}", "PAYROUTER_LOG_FORMAT": "text"})
    from app.config import Config, set_config
    from app.entrypoints import bootstrap

    set_config(Config.from_env())
    servers = []
    try:
        bootstrap.init()
        env = dict(os.environ)
        servers.append(start([sys.executable, "-m", "app", "sandbox", "--port", "{port}"], env, "/healthz",
                             port=sandbox_port)[0])
        api, base = start([sys.executable, "-m", "app", "serve", "--port", "{port}", "--workers", "2",
                           "--threads", "8"], env, "/readyz")
        servers.append(api)
        from tests import builders

        merchant_id, secret = builders.merchant("bench-outages")
        account = requests.post(f"{base}/v1/accounts", json={"currency": "USD", "customer": {"id": "bench"}},
                                headers=headers(secret), timeout=30).json()["id"]
        builders.fund(merchant_id, account, 10**12)
        redis_hang(base, secret, account, redis_server, args.clients, args.seconds)
        postgres_back(base, secret, account, cluster, args.clients, args.seconds)
        revocation(base, redis_server, False, args.revocations)
        revocation(base, redis_server, True, args.revocations)
    finally:
        for proc in servers:
            stop(proc)
        redis_server.stop()
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
