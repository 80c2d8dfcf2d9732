"""RQ queues and workers. Core money work has its own queues, apart from notifications and batch.

Jobs take plain ids and JSON-able arguments, and run inside the unified context of the
request that enqueued them (app.context.enqueue).
"""
from __future__ import annotations

import logging
import threading

from rq import Queue, SimpleWorker

from app import context
from app.redis_conn import get_redis, worker_redis

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
    """Runs ``task()`` every ``interval`` seconds in the worker process; errors are logged, never fatal."""

    def __init__(self, name: str, task, interval: float = 1.0):
        super().__init__(name=f"payrouter-{name}", daemon=True)
        self.task, self.interval, self.stopped = task, interval, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                with context.bound():
                    self.task()
            except Exception:  # noqa: BLE001 - Redis or the database may be down for a while
                log.exception("%s pass failed", self.name)
            self.stopped.wait(self.interval)


def maintenance_for(names: list[str]) -> list[Periodic]:
    """The sweeps a worker of these queues runs: core work re-queues stored callbacks and due
    status queries, and applies queued system-account moves to their balances; webhook work
    relays the event outbox and retries due deliveries; batch work deletes idempotency keys past
    their 24 h, reconciles the last minute's outcomes with the channels' statements
    (near-real-time reconciliation) and deletes week-old passes that compared nothing."""
    from app import ledger
    from app.services import callbacks
    from app.webhooks import relay

    threads = []
    if CORE in names:
        threads.append(Periodic("core-sweep", callbacks.sweep))
        threads.append(Periodic("ledger-moves", ledger.apply_all_queued_moves))
    if WEBHOOKS in names:
        threads.append(Periodic("webhook-relay", relay.run_once))
    if BATCH in names:
        from app import idempotency
        from app.config import get_config
        from app.services import reconcile

        threads.append(Periodic("idempotency-purge", idempotency.purge_expired, interval=600))
        threads.append(Periodic("reconcile-purge", reconcile.purge_empty_runs, interval=3600))
        if get_config().reconcile_interval > 0:
            threads.append(Periodic("reconcile-recent", reconcile.run_continuous,
                                    interval=get_config().reconcile_interval))
    return threads


def run_worker(names: list[str], burst: bool = False) -> None:
    """A worker that runs jobs in its own process (no fork per job: callbacks are small and many)."""
    from app import logs, metrics_dir
    from app.config import get_config

    metrics_dir.prepare(get_config().var_dir)  # its counters show on the API's /metrics (app.metrics_dir)
    logs.setup(get_config().log_json)
    from app import channels_runtime
    from channels.config import ChannelConfigError

    try:  # a live channel without its secret from the environment: refuse to start
        channels_runtime.prepare()
    except ChannelConfigError as exc:
        raise SystemExit(exc.message) from None
    names = names or list(ALL_QUEUES)
    for name in names:
        if name not in ALL_QUEUES:
            raise SystemExit(f"unknown queue {name}; known: {', '.join(ALL_QUEUES)}")
    connection = worker_redis()  # RQ lengthens its timeout for the blocking dequeue: not the request path's
    worker = SimpleWorker([Queue(n, connection=connection) for n in names], connection=connection)
    threads = [] if burst else maintenance_for(names)
    from app.tuning import tune_gc_for_serving

    tune_gc_for_serving()
    for thread in threads:
        thread.start()
    log.info("worker listening on %s", ",".join(names))
    try:
        worker.work(burst=burst, with_scheduler=True)
    finally:
        for thread in threads:
            thread.stopped.set()
