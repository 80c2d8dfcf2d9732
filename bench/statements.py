"""The statements one payment and one transfer run on PostgreSQL, listed in order (a
``before_cursor_execute`` listener around one request of each through the app's test client, after
a first that creates the system accounts and warms the caches), with the totals.

    DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_bench REDIS_URL=redis://127.0.0.1:6379/9 \
        .venv/bin/python bench/statements.py [--full]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid

from common import postgres_bench, setup_merchant, start, stop
from sqlalchemy import event


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
            listed = _listed(get_engine(), lambda path=path, body=body: client.post(path, json=body(),
                                                                                    headers=_headers(secret)))
            print(f"\n## one {name}: {sum(n for n, _ in listed)} statements executed, {len(listed)} driver calls")
            for n, text in listed:
                text = " ".join(text.split()) if args.full else text.strip().splitlines()[0][:110]
                print(f"{'×' + str(n) if n > 1 else '':>4} {text}")
            if args.cpu:
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
    finally:
        stop(sandbox[0])
    return 0


def _headers(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}", "Idempotency-Key": uuid.uuid4().hex}


def _listed(engine, send) -> list[tuple[int, str]]:
    listed: list[tuple[int, str]] = []

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        listed.append((len(parameters) if executemany else 1, statement))

    event.listen(engine, "before_cursor_execute", record)
    try:
        response = send()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 201, response.get_json()
    return listed


if __name__ == "__main__":
    sys.exit(main())
