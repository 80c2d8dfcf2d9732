"""/v1/events: what happened, as also sent to webhook endpoints."""
from flask import Blueprint, g

from app.adapters.models import Event
from app.domain.errors import NotFound
from app.entrypoints.api.common import listing, read
from app.entrypoints.api.openapi import ListOf, documented
from app.services import events
from app.services.listing import page

bp = Blueprint("events", __name__)


@bp.get("/v1/events")
@documented("List events", answers=ListOf("event"))
def list_events():
    def fetch(s, query):
        result = page(s, Event, merchant_id=g.merchant.id, query=query,
                      where=(Event.livemode == g.merchant.livemode,))
        return [events.representation(e) for e in result.items], result.has_more

    return listing(fetch, "/v1/events")


@bp.get("/v1/events/<event_id>")
@documented("Retrieve an event", answers="event")
def get_event(event_id):
    def fetch(s):
        event = s.get(Event, event_id)
        if event is None or event.merchant_id != g.merchant.id or event.livemode != g.merchant.livemode:
            raise NotFound(f"No such event: '{event_id}'", param="id")
        return events.representation(event)

    return read(fetch)
