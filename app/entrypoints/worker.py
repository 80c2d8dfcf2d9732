"""The RQ worker process: its queues' jobs, and the periodic sweeps each kind of worker runs beside them."""
from __future__ import annotations

import logging

from rq import Queue, SimpleWorker

from app.adapters.jobs import ALL_QUEUES, BATCH, CORE, WEBHOOKS, Periodic
from app.adapters.redis_conn import worker_redis

log = logging.getLogger("payrouter.jobs")


def maintenance_for(names: list[str]) -> list[Periodic]:
    """The sweeps a worker of these queues runs: core work re-queues stored callbacks and due
    status queries, and applies queued system-account moves to their balances; webhook work
    relays the event outbox and retries due deliveries; batch work deletes idempotency keys past
    their 24 h, reconciles the last minute's outcomes with the channels' statements
    (near-real-time reconciliation) and deletes week-old passes that compared nothing."""
    from app.services import callbacks, ledger
    from app.services.webhooks import relay

    threads = []
    if CORE in names:
        threads.append(Periodic("core-sweep", callbacks.sweep))
        threads.append(Periodic("ledger-moves", ledger.apply_all_queued_moves))
    if WEBHOOKS in names:
        threads.append(Periodic("webhook-relay", relay.run_once))
    if BATCH in names:
        from app.config import get_config
        from app.services import idempotency, reconcile

        threads.append(Periodic("idempotency-purge", idempotency.purge_expired, interval=600))
        threads.append(Periodic("reconcile-purge", reconcile.purge_empty_runs, interval=3600))
        if get_config().reconcile_interval > 0:
            threads.append(Periodic("reconcile-recent", reconcile.run_continuous,
                                    interval=get_config().reconcile_interval))
    return threads


def run_worker(names: list[str], burst: bool = False) -> None:
    """A worker that runs jobs in its own process (no fork per job: callbacks are small and many)."""
    from app.adapters import logs, metrics_dir
    from app.config import get_config

    metrics_dir.prepare(get_config().var_dir)  # its counters show on the API's /metrics (app.adapters.metrics_dir)
    logs.setup(get_config().log_json)
    from app.adapters import channels_runtime
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
    from app.entrypoints.tuning import tune_gc_for_serving

    tune_gc_for_serving()
    for thread in threads:
        thread.start()
    from app.adapters import channel_builds

    if not burst:
        channel_builds.start("worker")  # its channel build, reported (and kept current) for `channels import`
    log.info("worker listening on %s", ",".join(names))
    try:
        worker.work(burst=burst, with_scheduler=True)
    finally:
        for thread in threads:
            thread.stopped.set()
        if not burst:
            channel_builds.stop()
