"""RQ queues and workers. Core money work has its own queues, apart from notifications and batch.

Jobs take plain ids and JSON-able arguments, and run inside the unified context of the
request that enqueued them (app.context.enqueue).
"""
from __future__ import annotations

import logging

from rq import Queue, Worker

from app import context
from app.redis_conn import get_redis

CORE = "core"  # channel callbacks, status queries
WEBHOOKS = "webhooks"  # merchant notifications
BATCH = "batch"  # reconciliation, clean-up
ALL_QUEUES = (CORE, WEBHOOKS, BATCH)

log = logging.getLogger("payrouter.jobs")


def queue(name: str) -> Queue:
    if name not in ALL_QUEUES:
        raise ValueError(f"unknown queue {name}; known: {', '.join(ALL_QUEUES)}")
    return Queue(name, connection=get_redis())


def enqueue(name: str, func, *args, **kwargs):
    """Enqueue ``func`` (a dotted path or a function) on queue ``name`` with the current context."""
    return context.enqueue(queue(name), func, *args, **kwargs)


def run_worker(names: list[str], burst: bool = False) -> None:
    from app import logs
    from app.config import get_config

    logs.setup(get_config().log_json)
    names = names or list(ALL_QUEUES)
    for name in names:
        if name not in ALL_QUEUES:
            raise SystemExit(f"unknown queue {name}; known: {', '.join(ALL_QUEUES)}")
    connection = get_redis()
    worker = Worker([Queue(n, connection=connection) for n in names], connection=connection)
    log.info("worker listening on %s", ",".join(names))
    worker.work(burst=burst, with_scheduler=True)
