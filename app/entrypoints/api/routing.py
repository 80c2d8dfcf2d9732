"""POST /v1/routing/simulate: the routing decision for a body of any operation kind (``kind``, default
payment), with no side effect."""
from flask import Blueprint, g, request

from app.domain.errors import InvalidRequest
from app.entrypoints.api.common import json_response
from app.entrypoints.api.openapi import documented
from app.services import simulation
from app.services.idempotency import encode
from app.services.validation import parse_body

bp = Blueprint("routing", __name__)


@bp.post("/v1/routing/simulate")
@documented("The routing decision for a body, no side effect", body="simulate", answers="routing_decision",
            idempotent=False)  # nothing is made: no Idempotency-Key, and a decline is a decision (200), not a 402
def simulate():
    body = parse_body(request.get_data(cache=False), "simulate")
    kind = body.get("kind") or body.get("type") or "payment"  # `type`: the name this field had first
    if body.get("type") and body.get("kind") and body["type"] != body["kind"]:
        raise InvalidRequest("kind and type name different operation kinds: send kind alone", param="type")
    key = request.headers.get("Idempotency-Key") or body.get("reference") or "simulate"
    return json_response(200, encode(simulation.simulate(g.merchant, kind, body, key)))
