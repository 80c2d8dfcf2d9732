"""``GET /metrics`` (CONTRACT §5): Prometheus text format; PAYROUTER_METRICS_TOKEN, when set, is
required as a bearer token (else 401 in the contract's error shape)."""
from __future__ import annotations

import hmac

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST

from app.domain.errors import AuthenticationFailed
from app.entrypoints.app_config import app_config

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    expected = app_config().metrics_token
    if expected:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise AuthenticationFailed("a valid metrics bearer token is required", code="invalid_metrics_token")
    from app.services.metrics_scrape import exposition

    return Response(exposition(), mimetype=None, headers={"Content-Type": CONTENT_TYPE_LATEST})
