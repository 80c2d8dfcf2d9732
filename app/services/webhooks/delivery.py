"""Delivery jobs (WEBHOOKS queue): one attempt per delivery, then the next one scheduled per
``Config.webhook_retry_schedule`` (RQ ``enqueue_in`` and ``next_attempt_at`` in the row).

An attempt starts by moving the row ``pending`` → ``sending`` with ``attempts + 1`` in one
conditional UPDATE (compare-and-set on the status; the row lock serialises racers), committed
before anything is sent: a duplicated or retried job finds the row moved on and sends nothing.
``deliver_many`` does the same for a batch: one claiming transaction, concurrent sends, one
finishing transaction.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import urllib3
from sqlalchemy import bindparam, insert, select, update

from app import context
from app.adapters import jobs, metrics
from app.adapters.db import unit_of_work
from app.adapters.models import Event, utcnow
from app.adapters.webhook_models import (
    FAILED,
    PENDING,
    SENDING,
    SUCCEEDED,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.config import Config, get_config, scoped
from app.services import switches
from app.services.representation import rfc3339
from app.services.webhooks import endpoints, settings, signing

log = logging.getLogger("payrouter.webhooks")

JOB = "app.services.webhooks.delivery.deliver"
BATCH_JOB = "app.services.webhooks.delivery.deliver_many"
CHUNK = 32  # deliveries per batch job
THREADS = 8  # concurrent sends inside one job
EARLY_TOLERANCE = timedelta(seconds=1)
_OUTCOMES = {SUCCEEDED: "succeeded", PENDING: "retrying", FAILED: "failed"}  # the outcome label of an attempt
_local = threading.local()


def payload(event: Event) -> bytes:
    """The body sent: ``{"id", "type", "created_at", "data": <the object>}``."""
    body = {"id": event.id, "type": event.type, "created_at": rfc3339(event.created_at), "data": event.data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Claim:
    """What one claimed attempt needs, read in the claiming transaction."""

    delivery_id: str
    number: int
    event_id: str
    merchant_id: str
    object_id: str
    request_id: str | None
    url: str | None  # None: the endpoint was deleted
    secrets: tuple[str, ...]
    body: bytes


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: int
    error: str | None
    final: bool = False  # no retry whatever the schedule says

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def deliver(delivery_id: str) -> str:
    """The job for one delivery. Returns what happened (``skipped``: not due or already moved on)."""
    return next(iter(deliver_many([delivery_id])), "skipped")


def deliver_many(delivery_ids: list[str]) -> dict:
    """The job for a batch: claim all due ones at once, send concurrently, record all outcomes at once.
    Returns a count per resulting status."""
    if switches.is_on("webhooks"):
        _park(*delivery_ids)
        return {"paused": len(delivery_ids)}
    claims = _claim(delivery_ids)
    if not claims:
        return {}
    # The pool's threads send under this job's configuration (a thread starts with none of its own).
    attempt = functools.partial(_attempt, config=get_config())
    outcomes = list(_pool().map(attempt, claims)) if len(claims) > 1 else [attempt(claims[0])]
    return dict(Counter(_finish(claims, outcomes)))


_pools: dict[int, ThreadPoolExecutor] = {}


def _pool() -> ThreadPoolExecutor:
    """This process's send pool (a forked job process makes its own)."""
    pid = os.getpid()
    if pid not in _pools:
        _pools.clear()
        _pools[pid] = ThreadPoolExecutor(THREADS, thread_name_prefix="payrouter-webhook")
    return _pools[pid]


def _park(*delivery_ids: str) -> None:
    """Webhooks are paused (or Redis is down): forget these jobs; the sweep re-enqueues the deliveries."""
    with unit_of_work() as session:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_ids),
                                                      WebhookDelivery.status == PENDING).values(enqueued_at=None))


def _claim(delivery_ids: list[str]) -> list[Claim]:
    now = utcnow()
    lease = now + timedelta(seconds=settings().timeout + settings().lease_margin)
    with unit_of_work() as session:
        claimed = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(delivery_ids), WebhookDelivery.status == PENDING,
                   WebhookDelivery.next_attempt_at <= now + EARLY_TOLERANCE)
            .values(status=SENDING, attempts=WebhookDelivery.attempts + 1, leased_until=lease, enqueued_at=None,
                    updated_at=now)
            .returning(WebhookDelivery.id, WebhookDelivery.attempts, WebhookDelivery.event_id,
                       WebhookDelivery.endpoint_id)
            .execution_options(synchronize_session=False)).all()
        if not claimed:
            return []
        events = {e.id: e for e in session.scalars(select(Event).where(Event.id.in_({c[2] for c in claimed})))}
        hooks = {e.id: e for e in session.scalars(select(WebhookEndpoint).where(
            WebhookEndpoint.id.in_({c[3] for c in claimed})))}
        claims = []
        for delivery_id, number, event_id, endpoint_id in claimed:
            event, endpoint = events[event_id], hooks[endpoint_id]
            live = endpoint.deleted_at is None
            claims.append(Claim(delivery_id, number, event.id, event.merchant_id, event.object_id, event.request_id,
                                endpoint.url if live else None,
                                tuple(endpoints.signing_secrets(endpoint, now)) if live else (), payload(event)))
        return claims


def _connections() -> urllib3.PoolManager:
    """Per thread: keep-alive connections to endpoints, keyed by the pinned address and the name."""
    if getattr(_local, "pools", None) is None:
        _local.pools = urllib3.PoolManager(num_pools=64, maxsize=2, retries=False)
    return _local.pools


def _attempt(claim: Claim, config: Config) -> Outcome:
    """Send one claimed attempt in the event's request context, under ``config``, and log it."""
    with context.bound(claim.request_id, claim.merchant_id, claim.object_id), scoped(config):
        try:
            outcome = _send(claim) if claim.url else Outcome(None, 0, "endpoint deleted", final=True)
        except Exception as exc:  # noqa: BLE001 - an attempt that broke is a failed attempt, never a lost one
            log.exception("webhook attempt %s broke", claim.delivery_id)
            outcome = Outcome(None, 0, f"internal error: {type(exc).__name__}")
        log.info("webhook %s attempt %d to %s: %s", claim.event_id, claim.number, claim.url,
                 outcome.status_code or outcome.error, extra={"event": claim.event_id, "status": outcome.status_code})
        return outcome


def _send(claim: Claim) -> Outcome:
    started = time.perf_counter()
    # Resolved and checked at send time (DNS may have changed since the endpoint was saved), and
    # the connection goes to the address that was checked.
    target = endpoints.pin(claim.url)
    if isinstance(target, str):
        return Outcome(None, 0, target)
    headers = signing.headers(list(claim.secrets), claim.event_id, int(time.time()), claim.body)
    headers = context.outgoing_headers({**headers, "Content-Type": "application/json",
                                        "User-Agent": "PayRouter-Webhooks/1", "Host": target.host_header})
    tls = {"server_hostname": target.hostname, "assert_hostname": target.hostname} if target.scheme == "https" else {}
    timeout = settings().timeout
    try:
        for n, address in enumerate(target.addresses, start=1):  # the next one only if this one took nothing
            pool = _connections().connection_from_host(address, target.port, target.scheme, pool_kwargs=tls)
            try:
                response = pool.urlopen("POST", target.path, body=claim.body, headers=headers, redirect=False,
                                        retries=False, assert_same_host=False, preload_content=False,
                                        timeout=urllib3.Timeout(connect=timeout, read=timeout))
                break
            except urllib3.exceptions.ConnectTimeoutError:  # refused or unreachable: nothing was sent
                if n == len(target.addresses):
                    raise
        response.drain_conn()
        response.release_conn()
        ok = 200 <= response.status < 300
        return Outcome(response.status, _ms(started), None if ok else f"HTTP {response.status}")
    except urllib3.exceptions.NewConnectionError as exc:  # a ConnectTimeoutError to urllib3, yet no timeout:
        # refused or unreachable at once, said as such (a merchant told "timeout" looks for a slow server)
        cause = exc.__cause__ or exc.__context__
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc).rpartition(": ")[2]
        return Outcome(None, _ms(started), f"connection failed: {reason}"[:500])
    except urllib3.exceptions.TimeoutError:
        return Outcome(None, _ms(started), "timeout")
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return Outcome(None, _ms(started), f"{type(exc).__name__}: {exc}"[:500])


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _finish(claims: list[Claim], outcomes: list[Outcome]) -> list[str]:
    """Log the attempts, then per delivery: succeed, schedule the next attempt, or fail (compare-and-set
    on the claim: a row the sweep took back meanwhile is left alone). Returns the statuses."""
    now = utcnow()
    schedule = get_config().webhook_retry_schedule
    rows, retries = [], defaultdict(list)
    for claim, outcome in zip(claims, outcomes, strict=True):
        row = {"b_id": claim.delivery_id, "b_number": claim.number, "status": FAILED, "next_attempt_at": None,
               "enqueued_at": None, "completed_at": now, "last_status_code": outcome.status_code,
               "last_error": outcome.error}
        if outcome.ok:
            row["status"] = SUCCEEDED
        elif not outcome.final and claim.number < len(schedule):
            delay = schedule[claim.number]
            row.update(status=PENDING, next_attempt_at=now + timedelta(seconds=delay), enqueued_at=now,
                       completed_at=None)
            retries[delay].append(claim.delivery_id)
        rows.append(row)
    with unit_of_work() as session:
        connection = session.connection()
        connection.execute(insert(WebhookAttempt), [
            {"delivery_id": c.delivery_id, "number": c.number, "started_at": now, "status_code": o.status_code,
             "latency_ms": o.latency_ms, "error": o.error, "request_id": c.request_id}
            for c, o in zip(claims, outcomes, strict=True)])
        connection.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == bindparam("b_id"), WebhookDelivery.status == SENDING,
                   WebhookDelivery.attempts == bindparam("b_number"))
            .values(leased_until=None, updated_at=now, status=bindparam("status"),
                    next_attempt_at=bindparam("next_attempt_at"), enqueued_at=bindparam("enqueued_at"),
                    completed_at=bindparam("completed_at"), last_status_code=bindparam("last_status_code"),
                    last_error=bindparam("last_error")), rows)
    for row in rows:  # committed: one per attempt, by what came of it
        metrics.WEBHOOK_DELIVERIES.labels(_OUTCOMES[row["status"]]).inc()
    for delay, ids in retries.items():
        for start in range(0, len(ids), CHUNK):
            _queue(ids[start:start + CHUNK], delay)
    return [row["status"] for row in rows]


def schedule_job(delivery_id: str, delay: float = 0) -> bool:
    """Queue the job now or in ``delay`` seconds; False (and the row un-marked) if Redis is unreachable."""
    return _queue([delivery_id], delay)


def schedule_batch(delivery_ids: list[str]) -> bool:
    """Queue one ``deliver_many`` job for these deliveries; False (rows un-marked) if Redis is unreachable."""
    return _queue(delivery_ids, 0)


def _queue(delivery_ids: list[str], delay: float) -> bool:
    rounds = math.ceil(len(delivery_ids) / THREADS)
    options = {"result_ttl": 0, "job_timeout": int((settings().timeout + settings().lease_margin) * rounds)}
    func, arg = (JOB, delivery_ids[0]) if len(delivery_ids) == 1 else (BATCH_JOB, delivery_ids)
    try:
        if delay <= 0:
            jobs.enqueue(jobs.WEBHOOKS, func, arg, **options)
        else:
            context.enqueue_in(jobs.queue(jobs.WEBHOOKS), timedelta(seconds=delay), func, arg, **options)
        return True
    except Exception as exc:  # Redis down: the relay sweep finds the due deliveries later
        log.warning("could not queue webhook deliveries %s: %s", ", ".join(delivery_ids), exc)
        try:
            _park(*delivery_ids)
        except Exception:  # noqa: BLE001 - the sweep's grace period covers this too
            log.exception("could not un-mark deliveries %s", ", ".join(delivery_ids))
        return False
