"""The delivery job (WEBHOOKS queue): one compare-and-set attempt of one delivery, then the next
attempt scheduled per ``Config.webhook_retry_schedule`` (RQ ``enqueue_in`` and ``next_attempt_at``).

An attempt starts by moving the row ``pending`` → ``sending`` with ``attempts + 1``, compare-and-set
on (status, attempts): a duplicated or retried job finds the row moved on and sends nothing.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import requests
from sqlalchemy import select, update

from app import context, jobs, switches
from app.config import get_config
from app.db import unit_of_work
from app.models import Event, utcnow
from app.representation import rfc3339
from app.webhooks import endpoints, settings, signing
from app.webhooks.models import FAILED, PENDING, SENDING, SUCCEEDED, WebhookAttempt, WebhookDelivery, WebhookEndpoint

log = logging.getLogger("payrouter.webhooks")

JOB = "app.webhooks.delivery.deliver"
BATCH_JOB = "app.webhooks.delivery.deliver_many"
CHUNK = 32  # deliveries per batch job
THREADS = 8  # concurrent sends inside one batch job
EARLY_TOLERANCE = timedelta(seconds=1)
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

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def deliver(delivery_id: str) -> str:
    """The job body. Returns what happened (for logs and tests)."""
    if switches.is_on("webhooks"):
        _park(delivery_id)
        return "paused"
    claim = _claim(delivery_id)
    if claim is None:
        return "skipped"
    with context.bound(claim.request_id, claim.merchant_id, claim.object_id):
        outcome = _send(claim) if claim.url else Outcome(None, 0, "endpoint deleted")
        result = _finish(claim, outcome, final=claim.url is None)
        log.info("webhook %s attempt %d to %s: %s", claim.event_id, claim.number, claim.url,
                 outcome.status_code or outcome.error, extra={"event": claim.event_id, "status": outcome.status_code})
        return result


def deliver_many(delivery_ids: list[str]) -> dict:
    """Several deliveries in one job (the relay's batches), sent concurrently; each one is its own
    compare-and-set attempt exactly as in ``deliver``. Returns a count per outcome."""
    if switches.is_on("webhooks"):
        _park(*delivery_ids)
        return {"paused": len(delivery_ids)}
    return dict(Counter(_pool().map(_deliver_logged, delivery_ids)))


def _deliver_logged(delivery_id: str) -> str:
    try:
        return deliver(delivery_id)
    except Exception:  # noqa: BLE001 - one broken delivery must not sink its batch; its lease expires
        log.exception("webhook delivery %s failed unexpectedly", delivery_id)
        return "error"


_pools: dict[int, ThreadPoolExecutor] = {}


def _pool() -> ThreadPoolExecutor:
    """This process's send pool (a forked job process makes its own)."""
    pid = os.getpid()
    if pid not in _pools:
        _pools.clear()
        _pools[pid] = ThreadPoolExecutor(THREADS, thread_name_prefix="payrouter-webhook")
    return _pools[pid]


def _park(*delivery_ids: str) -> None:
    """Webhooks are paused: forget these jobs so the sweep re-enqueues the deliveries once lifted."""
    with unit_of_work() as session:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_ids),
                                                      WebhookDelivery.status == PENDING).values(enqueued_at=None))


def _claim(delivery_id: str) -> Claim | None:
    """Start the next attempt: ``pending`` → ``sending`` with ``attempts + 1`` in one conditional UPDATE
    (the row lock makes it compare-and-set), committed before anything is sent."""
    now = utcnow()
    lease = now + timedelta(seconds=settings().timeout + settings().lease_margin)
    with unit_of_work() as session:
        claimed = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING,
                   WebhookDelivery.next_attempt_at <= now + EARLY_TOLERANCE)
            .values(status=SENDING, attempts=WebhookDelivery.attempts + 1, leased_until=lease, enqueued_at=None,
                    updated_at=now)
            .returning(WebhookDelivery.attempts, WebhookDelivery.event_id, WebhookDelivery.endpoint_id)
            .execution_options(synchronize_session=False)).first()
        if claimed is None:
            return None
        number, event_id, endpoint_id = claimed
        event, endpoint = session.execute(
            select(Event, WebhookEndpoint).join(WebhookEndpoint, WebhookEndpoint.merchant_id == Event.merchant_id)
            .where(Event.id == event_id, WebhookEndpoint.id == endpoint_id)).one()
        live = endpoint.deleted_at is None
        return Claim(delivery_id, number, event.id, event.merchant_id, event.object_id, event.request_id,
                     endpoint.url if live else None, tuple(endpoints.signing_secrets(endpoint, now)) if live else (),
                     payload(event))


def _http() -> requests.Session:
    if getattr(_local, "session", None) is None:
        _local.session = requests.Session()
    return _local.session


def _send(claim: Claim) -> Outcome:
    started = time.perf_counter()
    if not get_config().allow_private_webhooks:  # re-checked at send time: DNS may have changed
        problem = endpoints.check_url(claim.url, allow_private=False)
        if problem:
            return Outcome(None, 0, problem)
    headers = signing.headers(list(claim.secrets), claim.event_id, int(time.time()), claim.body)
    headers = context.outgoing_headers({**headers, "Content-Type": "application/json",
                                        "User-Agent": "PayRouter-Webhooks/1"})
    try:
        response = _http().post(claim.url, data=claim.body, headers=headers, timeout=settings().timeout,
                                allow_redirects=False)
        response.close()
        return Outcome(response.status_code, _ms(started), None if response.ok else f"HTTP {response.status_code}")
    except requests.Timeout:
        return Outcome(None, _ms(started), "timeout")
    except requests.RequestException as exc:
        return Outcome(None, _ms(started), f"{type(exc).__name__}: {exc}"[:500])


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _finish(claim: Claim, outcome: Outcome, final: bool = False) -> str:
    """Log the attempt, then succeed, schedule the next attempt, or fail (compare-and-set on the claim)."""
    now = utcnow()
    schedule = get_config().webhook_retry_schedule
    delay = None
    if outcome.ok:
        values = {"status": SUCCEEDED, "completed_at": now}
    elif not final and claim.number < len(schedule):
        delay = schedule[claim.number]
        values = {"status": PENDING, "next_attempt_at": now + timedelta(seconds=delay), "enqueued_at": now}
    else:
        values = {"status": FAILED, "completed_at": now}
    with unit_of_work() as session:
        session.add(WebhookAttempt(delivery_id=claim.delivery_id, number=claim.number, started_at=now,
                                   status_code=outcome.status_code, latency_ms=outcome.latency_ms,
                                   error=outcome.error, request_id=claim.request_id))
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == claim.delivery_id, WebhookDelivery.status == SENDING,
                   WebhookDelivery.attempts == claim.number)
            .values(leased_until=None, last_status_code=outcome.status_code, last_error=outcome.error,
                    updated_at=now, **values)
            .execution_options(synchronize_session=False))
    if delay is not None:
        schedule_job(claim.delivery_id, delay)
    return values["status"]


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
