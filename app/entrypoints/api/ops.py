"""/ops: the operator API (degradation switches), behind a bearer token from PAYROUTER_OPS_TOKEN.

No token configured → every call answers 403 (the admin UI with users and roles comes later).
"""
from __future__ import annotations

import hmac
import os

from flask import Blueprint, jsonify, request

from app.config import get_config
from app.domain.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from app.services import switches
from app.services.validation import parse_json

bp = Blueprint("ops", __name__)

FIELDS = {"name", "on", "reason", "actor"}
ACTOR_PREFIX = "ops-api:"


def ops_token() -> str | None:
    config = get_config()
    return config.ops_token or config.extra.get("ops_token") or os.environ.get("PAYROUTER_OPS_TOKEN") or None


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
    body = parse_json(request.get_data(cache=False))
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidRequest(f"Received unknown parameter: {unknown[0]}", param=unknown[0], code="parameter_unknown")
    for name in ("name", "on", "reason"):
        if name not in body:
            raise InvalidRequest(f"Missing required param: {name}", param=name, code="parameter_missing")
    if not isinstance(body["on"], bool):
        raise InvalidRequest("on must be true or false", param="on")
    for name, longest in (("reason", 200), ("actor", 200 - len(ACTOR_PREFIX))):  # actor: the column holds 200
        if name in body and not (isinstance(body[name], str) and 0 < len(body[name]) <= longest):
            raise InvalidRequest(f"{name} must be a non-empty string of at most {longest} characters", param=name)
    actor = ACTOR_PREFIX + body.get("actor", "token")
    return jsonify(switches.set(body["name"], body["on"], actor, body["reason"]))


@bp.get("/ops/reconciliation")
def list_reconciliation_runs():
    """The newest reconciliation runs (daily and near-real-time); ``?channel=``, ``?issues=true``
    for runs that found something, ``?limit=`` (1–100, default 20)."""
    from app.services.reconcile import recent_runs

    unknown = sorted(set(request.args) - {"channel", "issues", "limit"})
    if unknown:
        raise InvalidRequest(f"Received unknown parameter: {unknown[0]}", param=unknown[0], code="parameter_unknown")
    raw = request.args.get("limit", "20")
    if not (raw.isascii() and raw.isdecimal()) or not 1 <= int(raw) <= 100:
        raise InvalidRequest("limit must be an integer from 1 to 100", param="limit")
    issues = request.args.get("issues", "false")
    if issues not in ("true", "false"):
        raise InvalidRequest("issues must be true or false", param="issues")
    runs = recent_runs(request.args.get("channel") or None, int(raw), with_issues=issues == "true")
    return jsonify({"object": "list", "data": runs, "has_more": False})
