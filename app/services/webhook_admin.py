"""Webhooks for operators (the console's "Webhooks" page): every merchant's endpoints, their
deliveries newest first (keyset pages), and "Redeliver": the same redelivery as the merchant API's
``POST /v1/events/{id}/redeliver`` to one endpoint (app.services.webhooks.deliveries), audited."""
from __future__ import annotations

from sqlalchemy import select, tuple_

from app.adapters.db import read_only, unit_of_work
from app.adapters.webhook_models import FAILED, PENDING, SENDING, SUCCEEDED, WebhookDelivery, WebhookEndpoint
from app.domain.errors import InvalidRequest, NotFound
from app.services import audit
from app.services.representation import rfc3339
from app.services.search import decode_cursor, encode_cursor
from app.services.webhooks import deliveries, relay

DELIVERY_STATUSES = (PENDING, SENDING, SUCCEEDED, FAILED)


def endpoints(merchant: str | None = None, include_deleted: bool = False, limit: int = 200) -> list[dict]:
    with read_only() as session:
        query = select(WebhookEndpoint).order_by(WebhookEndpoint.created_at.desc(), WebhookEndpoint.id.desc())
        if merchant:
            query = query.where(WebhookEndpoint.merchant_id == merchant)
        if not include_deleted:
            query = query.where(WebhookEndpoint.deleted_at.is_(None))
        return [{"id": e.id, "merchant": e.merchant_id, "livemode": e.livemode, "url": e.url,
                 "enabled_events": list(e.enabled_events or []), "description": e.description,
                 "deleted": e.deleted_at is not None, "created_at": rfc3339(e.created_at)}
                for e in session.scalars(query.limit(limit))]


def list_deliveries(endpoint: str | None = None, status: str | None = None, event: str | None = None,
                    limit: int = 50, after: str | None = None) -> tuple[list[dict], str | None]:
    """Deliveries newest first, optionally of one endpoint, status or event; (rows, next cursor)."""
    if status and status not in DELIVERY_STATUSES:
        raise InvalidRequest(f"status is one of {', '.join(DELIVERY_STATUSES)}", param="status")
    limit = max(1, min(int(limit), 200))
    query = select(WebhookDelivery)
    if endpoint:
        query = query.where(WebhookDelivery.endpoint_id == endpoint)
    if status:
        query = query.where(WebhookDelivery.status == status)
    if event:
        query = query.where(WebhookDelivery.event_id == event)
    if after:
        query = query.where(tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < tuple_(*decode_cursor(after)))
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit + 1)
    with read_only() as session:
        rows = list(session.scalars(query))
        shown = [{**view, "merchant": row.merchant_id} for row, view in
                 zip(rows[:limit], deliveries.represent_all(session, rows[:limit]), strict=True)]
        cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return shown, cursor


def redeliver(delivery_id: str, actor: str, reason: str | None = None) -> dict:
    """Send a delivery's event again to its endpoint: a new delivery (the next generation), queued
    now unless webhooks are paused. Audited (``webhook.redeliver``); returns the new delivery."""
    with unit_of_work() as session:
        original = session.get(WebhookDelivery, delivery_id)
        if original is None:
            raise NotFound(f"No such webhook delivery: '{delivery_id}'", param="delivery")
        created = deliveries.redeliver(session, original.merchant_id, original.event_id, original.endpoint_id,
                                       livemode=original.livemode)[0]
        audit.record(session, actor=actor, action="webhook.redeliver", target=delivery_id,
                     before={"delivery": delivery_id, "status": original.status, "attempts": original.attempts},
                     after={"delivery": created["id"], "event": original.event_id,
                            "endpoint": original.endpoint_id, "status": created["status"]},
                     reason=reason)
        event_id = original.event_id
    relay.sweep(event_id=event_id)  # as the API does: queue it now (the sweep would, within a second)
    return created
