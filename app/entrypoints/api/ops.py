"""/ops: the operator API (degradation switches), behind a bearer token from PAYROUTER_OPS_TOKEN.

No token configured → every call answers 403 (the admin UI with users and roles comes later).
"""
from __future__ import annotations

import hmac

from flask import Blueprint, Response, jsonify, request

from app.domain.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from app.entrypoints.app_config import app_config
from app.services import switches
from app.services.validation import parse_body, query_params

bp = Blueprint("ops", __name__)

ACTOR_PREFIX = "ops-api:"  # the audit column holds 200: schemas/api.schema.json ops_switch.actor leaves room


def ops_token() -> str | None:
    return app_config().ops_token


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
    for runs that found something, ``?limit=`` (1–100, default 20), ``?starting_after=`` (a run id)."""
    from app.services.reconcile import recent_runs

    limit = query_params(request.args, {"channel", "issues", "starting_after"}, default_limit=20)
    issues = request.args.get("issues", "false")
    if issues not in ("true", "false"):
        raise InvalidRequest("issues must be true or false", param="issues")
    runs, has_more = recent_runs(request.args.get("channel") or None, limit, with_issues=issues == "true",
                                 starting_after=request.args.get("starting_after"))
    return jsonify({"object": "list", "data": runs, "has_more": has_more})


@bp.get("/ops/reconciliation/issues")
def list_reconciliation_issues():
    """Issues newest first: ``?status=`` open (default), resolved or all, ``?channel=``, ``?kind=``
    (a class), ``?run=`` (the run that found it), ``?limit=`` (1–100, default 20), ``?starting_after=``."""
    from app.services import reconciliation_admin

    limit = query_params(request.args, {"status", "channel", "kind", "run", "starting_after"}, default_limit=20)
    status = request.args.get("status", "open")
    found, cursor = reconciliation_admin.issue_list(
        status=None if status == "all" else status, channel=request.args.get("channel") or None, limit=limit,
        kind=request.args.get("kind"), run=request.args.get("run") or None,
        starting_after=request.args.get("starting_after") or None)
    return jsonify({"object": "list", "data": found, "has_more": cursor is not None})


@bp.post("/ops/reconciliation/issues/<issue_id>/resolve")
def resolve_reconciliation_issue(issue_id: str):
    """Body: ``{"note", "actor"?}``; audited as ``ops-api:<actor>``, as the console's and the CLI's."""
    from app.services import reconciliation_admin

    query_params(request.args, set())
    body = parse_body(request.get_data(cache=False), "ops_resolve")
    actor = ACTOR_PREFIX + body.get("actor", "token")
    return jsonify(reconciliation_admin.resolve(issue_id, body["note"], actor))


@bp.get("/ops/reconciliation/<run_id>/issues.csv")
def export_reconciliation_run(run_id: str):
    """A run's issues as CSV: the same file as ``payrouter reconcile export RUN``, streamed (an
    unknown run answers 404 before anything is sent)."""
    from app.services.reconcile import csv_chunks

    query_params(request.args, set())
    return Response(csv_chunks(run_id), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{run_id}-issues.csv"'})
