"""The statements one payment and one transfer run on PostgreSQL, listed in order (a
``before_cursor_execute`` listener around one request of each through the app's test client, after
a first that creates the system accounts and warms the caches), with the totals and the round trips
they took (counted from libpq's trace of the connections the request used, ``tests.wire``).

    DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_bench REDIS_URL=redis://127.0.0.1:6379/9 \
        .venv/bin/python bench/statements.py [--full] [--cpu N [--callgrind]]

``--cpu N`` adds, over N sequential requests of each: this process's CPU per request, the CPU of
PostgreSQL's backends serving the bench database (psutil, before and after; their process titles
name the database: fixed_reference.named_cpu), and then, over N more, that CPU per statement: each
backend's on-CPU time (/proc/<pid>/schedstat, nanoseconds) read whenever a statement is sent on it, the time until the
next one (or the request's end) counted to the statement sent. So psycopg's BEGIN counts with a
transaction's first statement and the COMMIT with its last; in a pipelined block (db.pipelined)
the server runs the statements after they are sent, so the block's last statement carries them.
PostgreSQL's pg_stat_statements would say the same per statement but needs a server restart
(shared_preload_libraries); this needs nothing of the server.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict

from common import postgres_bench, setup_merchant, start, stop
from fixed_reference import named_cpu
from sqlalchemy import event

from tests.wire import traced


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="print whole statements, not their first line")
    parser.add_argument("--cpu", type=int, default=0, metavar="N",
                        help="also this process's CPU ms per request over N sequential requests of each")
    parser.add_argument("--callgrind", action="store_true",
                        help="under valgrind --tool=callgrind --instr-atstart=no: instructions counted only "
                             "around the N requests of --cpu (callgrind_control switches it on and off)")
    args = parser.parse_args()
    bench = postgres_bench()
    if bench is None:
        return 2
    from app.adapters.db import get_engine
    from app.entrypoints.web import create_app

    secret, ids = setup_merchant(2)
    sandbox = start([sys.executable, "-m", "app", "sandbox", "--port", "{port}"], bench.env, "/healthz",
                    port=bench.sandbox_port)
    try:
        client = create_app(bench.config).test_client()
        payment = lambda: {"amount": 2000, "currency": "USD", "reference": uuid.uuid4().hex,  # noqa: E731
                           "payment_method": {"type": "card", "brand": "visa", "country": "US", "last4": "4242"},
                           "customer": {"id": "bench", "country": "US"}}
        transfer = lambda: {"from_account": ids[0], "to_account": ids[1], "amount": 1,  # noqa: E731
                            "currency": "USD", "reference": uuid.uuid4().hex}
        for name, path, body in (("payment", "/v1/payments", payment), ("transfer", "/v1/transfers", transfer)):
            for _ in range(2):
                client.post(path, json=body(), headers=_headers(secret))
            listed, wire = _listed(get_engine(), lambda path=path, body=body: client.post(path, json=body(),
                                                                                          headers=_headers(secret)))
            print(f"\n## one {name}: {sum(n for n, _ in listed)} statements executed, {len(listed)} driver calls, "
                  f"{wire.round_trips} round trips to PostgreSQL (libpq's trace)")
            for n, text in listed:
                text = " ".join(text.split()) if args.full else text.strip().splitlines()[0][:110]
                print(f"{'×' + str(n) if n > 1 else '':>4} {text}")
            if args.cpu:
                backends = f"postgres:{bench.database}"
                backends_before = named_cpu(backends)
                started = time.process_time()
                if args.callgrind:
                    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True,
                                   capture_output=True)
                for _ in range(args.cpu):
                    response = client.post(path, json=body(), headers=_headers(secret))
                    assert response.status_code == 201, response.get_json()
                if args.callgrind:
                    subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True,
                                   capture_output=True)
                    subprocess.run(["callgrind_control", "-d", name, str(os.getpid())], check=True,
                                   capture_output=True)
                print(f"CPU of this process (test client, app, driver): "
                      f"{(time.process_time() - started) * 1000 / args.cpu:.2f} ms per {name}")
                print(f"CPU of PostgreSQL's backends serving {bench.database}: "
                      f"{(named_cpu(backends) - backends_before) * 1000 / args.cpu:.3f} ms per {name}")
                if not args.callgrind:
                    _per_statement(get_engine(), args.cpu, name, lambda path=path, body=body: client.post(
                        path, json=body(), headers=_headers(secret)))
    finally:
        stop(sandbox[0])
    return 0


def _headers(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}", "Idempotency-Key": uuid.uuid4().hex}


def _listed(engine, send):
    """The statements ``send()`` ran (how many times each, its text) and what it exchanged with PostgreSQL."""
    listed: list[tuple[int, str]] = []

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        listed.append((len(parameters) if executemany else 1, statement))

    event.listen(engine, "before_cursor_execute", record)
    try:
        response, wire = traced(engine, send)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 201, response.get_json()
    return listed, wire


def _on_cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def _per_statement(engine, n: int, name: str, send) -> None:
    """Backend CPU per statement over ``n`` requests (see the module's docstring), printed."""
    spent: dict[str, int] = defaultdict(int)
    counted: dict[str, int] = defaultdict(int)
    open_: dict[int, tuple[str, int]] = {}  # backend pid -> (statement sent last, its on-CPU ns then)

    def close(pid: int, now: int) -> None:
        if pid in open_:
            label, since = open_.pop(pid)
            spent[label] += now - since

    def sent(conn, _cursor, statement, _parameters, _context, _executemany):
        pid = conn.connection.driver_connection.info.backend_pid
        now = _on_cpu_ns(pid)
        close(pid, now)
        label = " ".join(statement.split())[:90]
        counted[label] += 1
        open_[pid] = (label, now)

    event.listen(engine, "before_cursor_execute", sent)
    try:
        for _ in range(n):
            response = send()
            assert response.status_code == 201, response.get_json()
            for pid in list(open_):
                close(pid, _on_cpu_ns(pid))
    finally:
        event.remove(engine, "before_cursor_execute", sent)
    total = sum(spent.values())
    print(f"PostgreSQL backend CPU per statement over {n} {name}s (µs per {name}; statements sent per {name}):")
    for label, ns in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {ns / n / 1000:8.1f}  {counted[label] / n:5.2f}×  {label}")
    print(f"  {total / n / 1000:8.1f}  total")


if __name__ == "__main__":
    sys.exit(main())
