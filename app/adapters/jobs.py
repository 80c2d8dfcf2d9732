"""RQ queues and workers. Core money work has its own queues, apart from notifications and batch.

Jobs take plain ids and JSON-able arguments, and run inside the unified context of the
request that enqueued them (app.context.enqueue).
"""
from __future__ import annotations

import logging
import threading

from rq import Queue

from app import context
from app.adapters.redis_conn import get_redis
from app.config import get_config, scoped

CORE = "core"  # channel callbacks, status queries
WEBHOOKS = "webhooks"  # merchant notifications
BATCH = "batch"  # reconciliation (batch and near-real-time), clean-up
ALL_QUEUES = (CORE, WEBHOOKS, BATCH)

log = logging.getLogger("payrouter.jobs")


def queue(name: str) -> Queue:
    if name not in ALL_QUEUES:
        raise ValueError(f"unknown queue {name}; known: {', '.join(ALL_QUEUES)}")
    return Queue(name, connection=get_redis())


def enqueue(name: str, func, *args, **kwargs):
    """Enqueue ``func`` (a dotted path or a function) on queue ``name`` with the current context."""
    return context.enqueue(queue(name), func, *args, **kwargs)


class Periodic(threading.Thread):
    """Runs ``task()`` every ``interval`` seconds in the worker process; errors are logged, never fatal.
    It runs under the configuration in force where it was made (a thread starts with no scope of its own)."""

    def __init__(self, name: str, task, interval: float = 1.0):
        super().__init__(name=f"payrouter-{name}", daemon=True)
        self.task, self.interval, self.stopped = task, interval, threading.Event()
        self.config = get_config()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                with context.bound(), scoped(self.config):
                    self.task()
            except Exception:  # noqa: BLE001 - Redis or the database may be down for a while
                log.exception("%s pass failed", self.name)
            self.stopped.wait(self.interval)
