"""The delivery job (WEBHOOKS queue): one compare-and-set attempt of one delivery, then the next
attempt scheduled per ``Config.webhook_retry_schedule`` (RQ ``enqueue_in`` and ``next_attempt_at``).

An attempt starts by moving the row ``pending`` → ``sending`` with ``attempts + 1``, compare-and-set
on (status, attempts): a duplicated or retried job finds the row moved on and sends nothing.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import requests
from sqlalchemy import update

from app import context, jobs, switches
from app.config import get_config
from app.db import unit_of_work
from app.models import Event, utcnow
from app.representation import rfc3339
from app.webhooks import endpoints, settings, signing
from app.webhooks.models import FAILED, PENDING, SENDING, SUCCEEDED, WebhookAttempt, WebhookDelivery, WebhookEndpoint

log = logging.getLogger("payrouter.webhooks")

JOB = "app.webhooks.delivery.deliver"
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


def _park(delivery_id: str) -> None:
    """Webhooks are paused: forget this job so the sweep re-enqueues the delivery once lifted."""
    with unit_of_work() as session:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                      WebhookDelivery.status == PENDING).values(enqueued_at=None))


def _claim(delivery_id: str) -> Claim | None:
    now = utcnow()
    with unit_of_work() as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None or row.status != PENDING or (row.next_attempt_at and row.next_attempt_at > now + EARLY_TOLERANCE):
            return None
        number = row.attempts + 1
        lease = now + timedelta(seconds=settings().timeout + settings().lease_margin)
        claimed = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING,
                   WebhookDelivery.attempts == row.attempts)
            .values(status=SENDING, attempts=number, leased_until=lease, enqueued_at=None, updated_at=now)
            .execution_options(synchronize_session=False)).rowcount == 1
        if not claimed:
            return None
        event = session.get(Event, row.event_id)
        endpoint = session.get(WebhookEndpoint, row.endpoint_id)
        live = endpoint is not None and endpoint.deleted_at is None
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
    options = {"result_ttl": 0, "job_timeout": int(settings().timeout + settings().lease_margin)}
    try:
        if delay <= 0:
            jobs.enqueue(jobs.WEBHOOKS, JOB, delivery_id, **options)
        else:
            context.enqueue_in(jobs.queue(jobs.WEBHOOKS), timedelta(seconds=delay), JOB, delivery_id, **options)
        return True
    except Exception as exc:  # Redis down: the relay sweep finds the due delivery later
        log.warning("could not queue webhook delivery %s: %s", delivery_id, exc)
        try:
            with unit_of_work() as session:
                session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                              WebhookDelivery.status == PENDING)
                                .values(enqueued_at=None))
        except Exception:  # noqa: BLE001 - the sweep's grace period covers this too
            log.exception("could not un-mark delivery %s", delivery_id)
        return False
