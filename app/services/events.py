"""Events, written to the outbox in the same transaction as the change they describe.

One event per (object, type): transitions are compare-and-set, so a repeated transition
(a duplicate callback, a retried job) changes nothing and records nothing; the unique
constraint on (object_id, type) is the database's backstop.
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from app import context
from app.adapters import writebehind
from app.adapters.models import Event, new_id, utcnow
from app.domain.kinds import EVENT_TYPES


def record(session: Session, *, merchant_id: str, type: str, object_id: str, data: dict,
           livemode: bool | None = None) -> str:
    """Write the event (in a batch job, with the batch's other rows); its id. It is of its object's
    mode (``livemode``, by default the object's ``data["livemode"]``): only endpoints of that mode
    get it."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type}")
    event_id = new_id("evt")
    livemode = bool(data.get("livemode", False)) if livemode is None else livemode
    rows = [{"id": event_id, "merchant_id": merchant_id, "livemode": livemode, "type": type, "object_id": object_id,
             "data": data, "request_id": context.current_request_id(), "relayed": False, "created_at": utcnow()}]
    writebehind.insert_rows(session, Event.__table__, rows)
    return event_id


def representation(event: Event) -> dict:
    from app.services.representation import rfc3339

    return {
        "id": event.id,
        "object": "event",
        "livemode": event.livemode,
        "type": event.type,
        "created_at": rfc3339(event.created_at),
        "request_id": event.request_id,
        "data": {"object": event.data},
    }
