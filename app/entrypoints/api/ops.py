"""/ops: the operator API (degradation switches), behind a bearer token from PAYROUTER_OPS_TOKEN.

No token configured → every call answers 403 (the admin UI with users and roles comes later).
"""
from __future__ import annotations

import hmac

from flask import Blueprint, jsonify, request

from app.config import get_config
from app.domain.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from app.services import switches
from app.services.validation import parse_body, query_params

bp = Blueprint("ops", __name__)

ACTOR_PREFIX = "ops-api:"  # the audit column holds 200: schemas/api.schema.json ops_switch.actor leaves room


def ops_token() -> str | None:
    return get_config().ops_token


@bp.before_request
def _authenticate():
    expected = ops_token()
    if not expected:
        raise PermissionDenied("the ops API is disabled: set PAYROUTER_OPS_TOKEN", code="ops_disabled")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise AuthenticationFailed("a valid ops bearer token is required", code="invalid_ops_token")


@bp.get("/ops/switches")
def list_switches():
    return jsonify({"object": "list", "data": switches.all(), "has_more": False})


@bp.post("/ops/switches")
def set_switch():
    """Body: ``{"name", "on": bool, "reason", "actor"?}``; audited as ``ops-api:<actor>``."""
    body = parse_body(request.get_data(cache=False), "ops_switch")
    actor = ACTOR_PREFIX + body.get("actor", "token")
    return jsonify(switches.set(body["name"], body["on"], actor, body["reason"]))


@bp.get("/ops/reconciliation")
def list_reconciliation_runs():
    """The newest reconciliation runs (daily and near-real-time); ``?channel=``, ``?issues=true``
    for runs that found something, ``?limit=`` (1–100, default 20)."""
    from app.services.reconcile import recent_runs

    limit = query_params(request.args, {"channel", "issues"}, default_limit=20)
    issues = request.args.get("issues", "false")
    if issues not in ("true", "false"):
        raise InvalidRequest("issues must be true or false", param="issues")
    runs = recent_runs(request.args.get("channel") or None, limit, with_issues=issues == "true")
    return jsonify({"object": "list", "data": runs, "has_more": False})
