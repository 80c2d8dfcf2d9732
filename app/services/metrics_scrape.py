"""What ``GET /metrics`` computes when it is scraped (never on the payment path): circuits, RQ
queue depths, open reconciliation issues, the webhook backlog, callbacks waiting. A source that
does not answer (Redis down or hung: REQUEST_TIMEOUT at most, then at once while marked down; the
database unreachable) leaves its families out of this scrape; the rest is still served."""
from __future__ import annotations

import logging
from datetime import datetime

import redis
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("payrouter.metrics")


class Scraped:
    """A prometheus-client collector of the gauges read from Redis and the database at scrape. Once a
    read of the database fails, this scrape asks it nothing more: a database that takes the full
    connect timeout (5 s) to fail would otherwise cost it once per source, beyond Prometheus's 10 s
    scrape timeout, and the whole scrape would be lost (with the 5xx it is there to count)."""

    def collect(self):
        scrape = _Scrape()
        yield from self._circuits(scrape)
        yield from self._queues()
        yield from self._builds(scrape)
        yield from self._database(scrape)

    def _circuits(self, scrape: "_Scrape"):
        from app.adapters.channels_runtime import registry
        from app.services import breaker

        family = GaugeMetricFamily("payrouter_channel_circuit_open", "1 while the channel's circuit is open",
                                   labels=["channel"])
        try:  # circuits opened by hand are re-read from the database every few seconds
            for channel_id in registry().ids():
                family.add_metric([channel_id], 1.0 if breaker.describe(channel_id)["state"] == "open" else 0.0)
        except Exception as exc:  # noqa: BLE001 - the database unreachable: this gauge is left out of this scrape
            scrape.failed(exc)
            log.warning("metrics: circuits left out: %s", exc)
            return
        yield family

    def _queues(self):
        from rq import Queue

        from app.adapters import jobs, redis_conn

        if redis_conn.is_down():
            return
        family = GaugeMetricFamily("payrouter_queue_depth", "Jobs waiting in an RQ queue", labels=["queue"])
        try:
            connection = redis_conn.get_redis()
            for name in jobs.ALL_QUEUES:
                family.add_metric([name], Queue(name, connection=connection).count)
        except redis.RedisError as exc:
            log.warning("metrics: queue depths left out, Redis: %s", exc)
            return
        yield family

    def _builds(self, scrape: "_Scrape"):
        from app.adapters import channel_builds, channel_definitions, redis_conn

        if redis_conn.is_down() or scrape.database_failed:
            return
        try:
            reports = channel_builds.live()
            stored = channel_definitions.version(channel_definitions.current())
        except Exception as exc:  # noqa: BLE001 - Redis or the database: these gauges are left out of this scrape
            scrape.failed(exc)
            log.warning("metrics: channel builds left out: %s", exc)
            return
        info = GaugeMetricFamily("payrouter_channels_definitions_info",
                                 "1 per live process, labelled with the channel definitions version it runs "
                                 "(compare with payrouter_channels_stored_definitions_info)",
                                 labels=["role", "host", "pid", "version"])
        stale = GaugeMetricFamily("payrouter_channels_process_stale",
                                  "1 per live process that could not build a stored channel definition "
                                  "(it runs the others)", labels=["role", "host", "pid"])
        for report in reports:
            info.add_metric([report.role, report.host, str(report.pid), report.version or ""], 1.0)
            stale.add_metric([report.role, report.host, str(report.pid)], 1.0 if report.stale else 0.0)
        current = GaugeMetricFamily("payrouter_channels_stored_definitions_info",
                                    "1, labelled with the version of the channel definitions stored",
                                    labels=["version"])
        current.add_metric([stored], 1.0)
        yield from (info, stale, current)

    def _database(self, scrape: "_Scrape"):
        if scrape.database_failed:
            log.warning("metrics: database gauges left out: the database failed earlier in this scrape")
            return
        from app.adapters.db import read_only
        from app.adapters.models import ChannelCallback, ReconciliationIssue, utcnow
        from app.adapters.webhook_models import PENDING, SENDING, WebhookDelivery

        issues = GaugeMetricFamily("payrouter_reconciliation_open_issues", "Reconciliation issues still open",
                                   labels=["channel"])
        backlog = GaugeMetricFamily("payrouter_webhook_backlog", "Webhook deliveries not finished (pending or sending)")
        oldest = GaugeMetricFamily("payrouter_webhook_oldest_pending_seconds",
                                   "Age of the oldest webhook delivery not finished (0: none)")
        waiting = GaugeMetricFamily("payrouter_callbacks_unapplied", "Channel callbacks received, not applied yet")
        lag = GaugeMetricFamily("payrouter_callback_oldest_unapplied_seconds",
                                "Age of the oldest channel callback received and not applied yet (0: none)")
        try:
            with read_only() as session:
                counts = dict(session.execute(
                    select(ReconciliationIssue.channel, func.count()).where(ReconciliationIssue.status == "open")
                    .group_by(ReconciliationIssue.channel)).all())
                unfinished = WebhookDelivery.status.in_((PENDING, SENDING))
                deliveries, first_delivery = session.execute(
                    select(func.count(), func.min(WebhookDelivery.created_at)).where(unfinished)).one()
                callbacks, first_callback = session.execute(
                    select(func.count(), func.min(ChannelCallback.received_at))
                    .where(ChannelCallback.processed_at.is_(None))).one()
        except Exception as exc:  # noqa: BLE001 - any database fault: these gauges are left out of this scrape
            log.warning("metrics: database gauges left out: %s", exc)
            return
        from app.adapters.channels_runtime import registry

        for channel_id in sorted(set(registry().ids()) | set(counts)):
            issues.add_metric([channel_id], counts.get(channel_id, 0))
        now = utcnow()
        backlog.add_metric([], deliveries)
        oldest.add_metric([], _age(now, first_delivery))
        waiting.add_metric([], callbacks)
        lag.add_metric([], _age(now, first_callback))
        yield from (issues, backlog, oldest, waiting, lag)


class _Scrape:
    """What one scrape learnt so far: whether the database failed it (scrapes may run at once, so it is
    not the collector's)."""

    def __init__(self) -> None:
        self.database_failed = False

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, DBAPIError):
            self.database_failed = True


def _age(now: datetime, since: datetime | None) -> float:
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0


class _ThisProcess:
    """The default registry's metrics, when there is no multiprocess directory (one process)."""

    def collect(self):
        return REGISTRY.collect()


def exposition() -> bytes:
    """The text of one scrape: every process's counters and histograms, and the scraped gauges."""
    from prometheus_client import values

    import app.adapters.metrics  # noqa: F401 - the metrics exist (and show) before anything moved them

    registry = CollectorRegistry()
    # The mode prometheus_client took when it was imported, not the environment now: a process that
    # set PROMETHEUS_MULTIPROC_DIR later (a command run in process) still counts in memory.
    if values.ValueClass is not values.MutexValue:
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(Scraped())
    return generate_latest(registry)
