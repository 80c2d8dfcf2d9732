"""/v1/webhook_endpoints and the webhook views of /v1/events: endpoints, deliveries, redelivery."""
from __future__ import annotations

from flask import Blueprint, g

from app.adapters.db import unit_of_work
from app.entrypoints.api.common import SecretShownOnce, create, json_response, listing, read
from app.entrypoints.api.openapi import ListOf, documented
from app.services import idempotency
from app.services.webhooks import deliveries, relay
from app.services.webhooks import endpoints as service

bp = Blueprint("webhooks", __name__)


def _unseal(session, payload: dict) -> dict:
    return service.unseal(session, g.merchant.id, payload)



@bp.post("/v1/webhook_endpoints")
@documented("Create a webhook endpoint (secret shown once)", body="webhook_endpoint_create",
            answers="webhook_endpoint", status=201)
def create_endpoint():
    shows = SecretShownOnce(_unseal)

    def execute(session, body):
        endpoint, secret = service.create_endpoint(session, g.merchant.id, body, g.merchant.livemode)
        return shows.store(201, service.representation(endpoint, secret))

    return create("webhook_endpoint_create", execute, present=shows)


@bp.get("/v1/webhook_endpoints")
@documented("List webhook endpoints", answers=ListOf("webhook_endpoint"))
def list_endpoints():
    def fetch(session, query):
        result = service.list_endpoints(session, g.merchant.id, query, g.merchant.livemode)
        return [service.representation(e) for e in result.items], result.has_more

    return listing(fetch, "/v1/webhook_endpoints")


@bp.get("/v1/webhook_endpoints/<endpoint_id>")
@documented("Retrieve a webhook endpoint", answers="webhook_endpoint")
def get_endpoint(endpoint_id):
    return read(lambda s: service.representation(service.get_endpoint(s, g.merchant.id, endpoint_id,
                                                                      g.merchant.livemode)))


@bp.delete("/v1/webhook_endpoints/<endpoint_id>")
@documented("Delete a webhook endpoint", answers="deleted_webhook_endpoint")
def delete_endpoint(endpoint_id):
    with unit_of_work() as session:
        payload = service.delete_endpoint(session, g.merchant.id, endpoint_id, g.merchant.livemode)
    return json_response(200, idempotency.encode(payload))


@bp.post("/v1/webhook_endpoints/<endpoint_id>/rotate_secret")
@documented("Rotate the signing secret; the old one keeps signing during the overlap window",
            optional_body="webhook_secret_rotation", answers="webhook_endpoint")
def rotate_secret(endpoint_id):
    shows = SecretShownOnce(_unseal)

    def execute(session, body):
        endpoint, secret = service.rotate_secret(session, g.merchant.id, endpoint_id, body.get("overlap_seconds"),
                                                 g.merchant.livemode)
        return shows.store(200, service.representation(endpoint, secret))

    return create("webhook_secret_rotation", execute, shows, body_optional=True)


@bp.get("/v1/webhook_endpoints/<endpoint_id>/deliveries")
@documented("List an endpoint's deliveries and attempts", answers=ListOf("webhook_delivery"))
def endpoint_deliveries(endpoint_id):
    return listing(lambda s, query: deliveries.list_deliveries(s, g.merchant.id, query, endpoint_id=endpoint_id,
                                                               livemode=g.merchant.livemode),
                   f"/v1/webhook_endpoints/{endpoint_id}/deliveries")


@bp.get("/v1/events/<event_id>/deliveries")
@documented("List an event's deliveries and attempts", answers=ListOf("webhook_delivery"))
def event_deliveries(event_id):
    return listing(lambda s, query: deliveries.list_deliveries(s, g.merchant.id, query, event_id=event_id,
                                                               livemode=g.merchant.livemode),
                   f"/v1/events/{event_id}/deliveries")


@bp.post("/v1/events/<event_id>/redeliver")
@documented("Send an event again (optionally to one endpoint)", optional_body="event_redelivery",
            answers=ListOf("webhook_delivery"))
def redeliver(event_id):
    def execute(session, body):
        created = deliveries.redeliver(session, g.merchant.id, event_id, body.get("endpoint"),
                                       livemode=g.merchant.livemode)
        return 200, {"object": "list", "data": created, "has_more": False}

    response = create("event_redelivery", execute, body_optional=True)
    if response.status_code == 200:
        relay.sweep(event_id=event_id)
    return response
