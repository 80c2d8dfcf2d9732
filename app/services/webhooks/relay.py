"""The outbox relay: events with ``relayed = False`` → one delivery per subscribed endpoint → a job
on the WEBHOOKS queue; and the sweep, which re-queues what Redis lost and recovers attempts
whose worker died. Both are safe to run concurrently and repeatedly (row locks with SKIP LOCKED
on PostgreSQL, serialised transactions on SQLite, a unique (event, endpoint, generation) key).

``run_once()`` does one pass of both; every worker serving the WEBHOOKS queue runs it each
second (app.entrypoints.worker.maintenance_for).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from app import context
from app.adapters.db import unit_of_work
from app.adapters.models import Event, new_id, utcnow
from app.adapters.webhook_models import FAILED, PENDING, SENDING, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.config import get_config
from app.services import switches
from app.services.webhooks import settings
from app.services.webhooks.delivery import CHUNK, schedule_batch, schedule_job

log = logging.getLogger("payrouter.webhooks.relay")

BATCH = 500


def _locking(query):
    """FOR UPDATE SKIP LOCKED where the database has it (SQLite serialises writers instead)."""
    return query if get_config().is_sqlite else query.with_for_update(skip_locked=True)


def new_delivery(event: Event, endpoint: WebhookEndpoint, generation: int, now) -> WebhookDelivery:
    return WebhookDelivery(id=new_id("whd"), merchant_id=event.merchant_id, livemode=event.livemode, event_id=event.id,
                           endpoint_id=endpoint.id, generation=generation, status=PENDING, attempts=0,
                           next_attempt_at=now, request_id=event.request_id, created_at=now, updated_at=now)


def relay_events(limit: int = BATCH) -> int:
    """Turn up to ``limit`` unrelayed events into deliveries and queue them. Returns events relayed."""
    now = utcnow()
    created: list[WebhookDelivery] = []
    with unit_of_work() as session:
        batch = list(session.scalars(_locking(
            select(Event).where(Event.relayed.is_(False)).order_by(Event.created_at, Event.id).limit(limit))))
        if not batch:
            return 0
        endpoints = defaultdict(list)  # (merchant, mode) → its endpoints: a test event goes to test endpoints only
        for endpoint in session.scalars(select(WebhookEndpoint).where(
                WebhookEndpoint.merchant_id.in_({e.merchant_id for e in batch}), WebhookEndpoint.deleted_at.is_(None))):
            endpoints[endpoint.merchant_id, endpoint.livemode].append(endpoint)
        existing = {tuple(row) for row in session.execute(select(WebhookDelivery.event_id, WebhookDelivery.endpoint_id)
                    .where(WebhookDelivery.event_id.in_([e.id for e in batch]), WebhookDelivery.generation == 0))}
        for event in batch:
            for endpoint in endpoints[event.merchant_id, event.livemode]:
                if (endpoint.subscribes(event.type) and endpoint.created_at <= event.created_at
                        and (event.id, endpoint.id) not in existing):
                    created.append(new_delivery(event, endpoint, 0, now))
            event.relayed = True
        session.add_all(created)
    dispatch([(d.id, d.request_id, d.merchant_id) for d in created])
    return len(batch)


def dispatch(deliveries: list[tuple[str, str | None, str]]) -> int:
    """Queue jobs for (delivery id, request id, merchant id) now, unless webhooks are paused: one
    ``deliver`` job (in the event's request context) for a lone delivery, else batches of CHUNK."""
    if not deliveries or switches.is_on("webhooks"):
        return 0
    ids = [d[0] for d in deliveries]
    with unit_of_work() as session:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids), WebhookDelivery.status == PENDING)
                        .values(enqueued_at=utcnow()).execution_options(synchronize_session=False))
    if len(deliveries) == 1:
        delivery_id, request_id, merchant_id = deliveries[0]
        with context.bound(request_id, merchant_id):
            return int(schedule_job(delivery_id))
    for start in range(0, len(ids), CHUNK):
        if not schedule_batch(ids[start:start + CHUNK]):
            _unmark(ids[start + CHUNK:])  # Redis is down: leave the rest to the sweep
            return start
    return len(ids)


def _unmark(ids: list[str]) -> None:
    if ids:
        with unit_of_work() as session:
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).values(enqueued_at=None)
                            .execution_options(synchronize_session=False))


def recover_lost(now=None) -> int:
    """Attempts whose worker died (lease expired while ``sending``): count them, retry or fail."""
    now = now or utcnow()
    schedule = get_config().webhook_retry_schedule
    recovered = 0
    with unit_of_work() as session:
        lost = list(session.scalars(_locking(select(WebhookDelivery).where(
            WebhookDelivery.status == SENDING, WebhookDelivery.leased_until < now).limit(BATCH))))
        for row in lost:
            error = "attempt lost: the worker stopped before recording its outcome"
            values = {"status": FAILED, "completed_at": now} if row.attempts >= len(schedule) else \
                {"status": PENDING, "next_attempt_at": now, "enqueued_at": None}
            done = session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == row.id, WebhookDelivery.status == SENDING,
                WebhookDelivery.attempts == row.attempts).values(leased_until=None, last_error=error, updated_at=now,
                                                                   **values)
                .execution_options(synchronize_session=False)).rowcount
            if done and not session.scalars(select(WebhookAttempt.id).where(
                    WebhookAttempt.delivery_id == row.id, WebhookAttempt.number == row.attempts)).first():
                session.add(WebhookAttempt(delivery_id=row.id, number=row.attempts, started_at=now, latency_ms=0,
                                           error=error, request_id=row.request_id))
            recovered += done
    return recovered


def sweep(event_id: str | None = None, limit: int = BATCH) -> int:
    """Queue due pending deliveries that no job is known to hold: never queued (Redis was down,
    webhooks were paused) or queued but overdue by more than the grace period (the job was lost)."""
    recover_lost()
    if switches.is_on("webhooks"):
        return 0
    now = utcnow()
    cutoff = now - timedelta(seconds=settings().sweep_grace)
    query = select(WebhookDelivery.id, WebhookDelivery.request_id, WebhookDelivery.merchant_id).where(
        WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.enqueued_at.is_(None),
            and_(WebhookDelivery.enqueued_at < cutoff, WebhookDelivery.next_attempt_at < cutoff)))
    if event_id:
        query = query.where(WebhookDelivery.event_id == event_id)
    with unit_of_work() as session:
        query = _locking(query.order_by(WebhookDelivery.next_attempt_at).limit(limit))
        due = [tuple(row) for row in session.execute(query)]
    return dispatch(due)


def run_once() -> dict:
    """One pass: relay every unrelayed event, then sweep."""
    relayed = 0
    while True:
        count = relay_events()
        relayed += count
        if count < BATCH:
            break
    return {"relayed": relayed, "queued": sweep()}
