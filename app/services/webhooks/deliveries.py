"""Deliveries as merchants see them (with their attempt log), and redelivery of an event."""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.adapters.models import Event, utcnow
from app.adapters.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.domain.errors import Conflict, NotFound
from app.services.listing import ListQuery, page
from app.services.representation import rfc3339
from app.services.webhooks import endpoints as endpoint_service
from app.services.webhooks.relay import new_delivery


def representation(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict:
    return {
        "id": delivery.id,
        "object": "webhook_delivery",
        "livemode": delivery.livemode,
        "created_at": rfc3339(delivery.created_at),
        "event": delivery.event_id,
        "webhook_endpoint": delivery.endpoint_id,
        "redelivery": delivery.generation > 0,
        "status": delivery.status,
        "attempt_count": delivery.attempts,
        "next_attempt_at": rfc3339(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "completed_at": rfc3339(delivery.completed_at),
        "request_id": delivery.request_id,
        "attempts": [{"number": a.number, "started_at": rfc3339(a.started_at), "status_code": a.status_code,
                      "latency_ms": a.latency_ms, "error": a.error} for a in attempts],
    }


def represent_all(session: Session, deliveries: list[WebhookDelivery]) -> list[dict]:
    attempts = defaultdict(list)
    if deliveries:
        for attempt in session.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id.in_([d.id for d in deliveries])).order_by(WebhookAttempt.number)):
            attempts[attempt.delivery_id].append(attempt)
    return [representation(d, attempts[d.id]) for d in deliveries]


def get_event(session: Session, merchant_id: str, event_id: str, livemode: bool = False) -> Event:
    event = session.get(Event, event_id)
    if event is None or event.merchant_id != merchant_id or event.livemode != livemode:
        raise NotFound(f"No such event: '{event_id}'", param="id")
    return event


def list_deliveries(session: Session, merchant_id: str, query: ListQuery, *,
                    endpoint_id: str | None = None, event_id: str | None = None,
                    livemode: bool = False) -> tuple[list[dict], bool]:
    """One page of an endpoint's or an event's deliveries, newest first."""
    if endpoint_id:
        endpoint_service.get_endpoint(session, merchant_id, endpoint_id, livemode)
        where = (WebhookDelivery.endpoint_id == endpoint_id,)
    else:
        get_event(session, merchant_id, event_id, livemode)
        where = (WebhookDelivery.event_id == event_id,)
    result = page(session, WebhookDelivery, merchant_id=merchant_id, query=query,
                  where=(WebhookDelivery.livemode == livemode, *where))
    return represent_all(session, result.items), result.has_more


def redeliver(session: Session, merchant_id: str, event_id: str, endpoint_id: str | None = None,
              livemode: bool = False) -> list[dict]:
    """New deliveries of an event: to one endpoint of its mode, or to every endpoint of its mode
    (not deleted) subscribed to its type."""
    event = get_event(session, merchant_id, event_id, livemode)
    if endpoint_id:
        targets = [endpoint_service.get_endpoint(session, merchant_id, endpoint_id, livemode, param="endpoint")]
    else:
        targets = [e for e in session.scalars(select(WebhookEndpoint).where(
            WebhookEndpoint.merchant_id == merchant_id, WebhookEndpoint.livemode == livemode,
            WebhookEndpoint.deleted_at.is_(None)).order_by(
            WebhookEndpoint.created_at)) if e.subscribes(event.type)]
    now, created = utcnow(), []
    for endpoint in targets:
        generation = session.scalar(select(func.max(WebhookDelivery.generation)).where(
            WebhookDelivery.event_id == event.id, WebhookDelivery.endpoint_id == endpoint.id))
        created.append(new_delivery(event, endpoint, (generation if generation is not None else -1) + 1, now))
    try:
        with session.begin_nested():
            session.add_all(created)
    except IntegrityError:
        raise Conflict("a redelivery of this event is being created concurrently; retry") from None
    return [representation(d, []) for d in created]
