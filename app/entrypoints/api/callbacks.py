"""POST /callbacks/<channel_id>: a channel's signed callback, stored then applied by a worker."""
from flask import Blueprint, request

from app.entrypoints.api.common import json_response
from app.services import callbacks
from app.services.idempotency import encode

bp = Blueprint("callbacks", __name__)


@bp.post("/callbacks/<channel_id>")
def receive(channel_id):
    inbox_id = callbacks.receive(channel_id, dict(request.headers), request.get_data(cache=False))
    return json_response(200, encode({"received": True, "id": inbox_id}))
