"""Prometheus metrics (CONTRACT §5): the counters and histograms the code moves, and settling's
count taken only once its transaction commits.

Multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set before this module is first imported
(``payrouter serve`` and ``payrouter worker`` set it, app.adapters.metrics_dir), every process writes its
values to files there, and ``GET /metrics`` sums the files of all processes: gunicorn workers and
RQ workers alike. Without it (tests in one process) the values live in this process.

On the request path a metric costs a counter or histogram update in memory (an mmap in
multiprocess mode): no database, no Redis. What needs them (queue depths, open reconciliation
issues, circuits, webhook backlog) is computed when /metrics is scraped (app.services.metrics_scrape).
"""
from __future__ import annotations

from datetime import datetime, timezone

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.orm import Session

from app.adapters import db
from rules import engine

HTTP_REQUESTS = Counter("payrouter_http_requests", "HTTP requests answered, by route template",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("payrouter_http_request_duration_seconds", "Time to answer an HTTP request",
                          ["method", "route"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
OPERATIONS = Counter("payrouter_operations", "Operations that reached a final status (counted once, on commit)",
                     ["kind", "status", "channel"])
RULES_DECISION = Histogram("payrouter_rules_decision_seconds", "Time to decide the route of one operation",
                           buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1))
CALLBACK_LAG = Histogram("payrouter_callback_lag_seconds", "From a channel callback received to applied (committed)",
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800))
ENGINE_FALLBACKS = Counter("payrouter_rules_engine_fallbacks",
                           "Decisions the reference evaluator answered because the rules engine failed on the fact")
RULES_PAIR_BUILDS = Counter("payrouter_rules_pair_builds",
                            "Merchant rule sets compiled together with the platform's (pairs), off the request path")
WEBHOOK_DELIVERIES = Counter("payrouter_webhook_deliveries", "Webhook delivery attempts, by what came of them",
                             ["outcome"])
CHANNELS_BUILD_FAILURES = Counter("payrouter_channels_build_failures",
                                  "Failed builds of the stored channel definitions, each try counted "
                                  "(the process runs the stored channels it could build)")
CHANNELS_BUILD_STALE = Gauge("payrouter_channels_build_stale",
                             "1 while this process runs without a stored channel it could not build "
                             "(per process: pid label in multiprocess mode)",
                             multiprocess_mode="liveall")
QUERIES_PUT_OFF = Counter("payrouter_status_queries_put_off",
                          "Status queries not asked because this process does not run the operation's channel "
                          "(not built here, or removed): each put off with backoff", ["channel"])

if ENGINE_FALLBACKS.inc not in engine.FALLBACK_LISTENERS:
    engine.FALLBACK_LISTENERS.append(ENGINE_FALLBACKS.inc)

NO_CHANNEL = "ledger"  # the channel label of what moves inside the ledger only (balance payments, transfers)
UNMATCHED_ROUTE = "unmatched"  # the route label of a request no URL rule matched (never the raw path)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    method = method if method in _METHODS else "OTHER"  # label values stay bounded
    route = route or UNMATCHED_ROUTE
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def callbacks_applied(received: list[datetime]) -> None:
    """Callbacks received at these times (naive UTC, as stored) were applied, and that committed."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for at in received:
        CALLBACK_LAG.observe(max((now - at).total_seconds(), 0.0))


def settled_on_commit(session: Session, kind: str, status: str, channel: str | None) -> None:
    """Count an operation that reached ``status`` when (and only if) the transaction that wrote it
    commits: a settlement rolled back (a lost race, a refused balance, a savepoint undone) counts nothing."""
    db.after_commit(session, _count_settled, (kind, status, channel or NO_CHANNEL))


def _count_settled(settled: list[tuple[str, str, str]]) -> None:
    for labels in settled:
        OPERATIONS.labels(*labels).inc()
