"""/healthz (the process is up) and /readyz (the process can serve money requests).

Ready means the database answers: without Redis, money requests still work (CONTRACT §5), so
Redis is reported in the body, never a reason for 503. Nor is a channel this process could not
build (it runs every other stored channel, app.adapters.channels_runtime): it is ``degraded`` with
200. A load balancer that took such a process out would, when every process lacks the same thing,
take them all out for a change that left each still routing on the other channels; the failure is
for operators (the import's exit code, ``payrouter_channels_process_stale``, the console), not for
the balancer.

Anyone may ask: the answer is status words only (``ready``/``degraded``/``unavailable``; each check
``ok``, ``error`` or ``degraded``). With the ops token (``Authorization: Bearer $PAYROUTER_OPS_TOKEN``)
it adds why: the exception's class, the channels left out with the environment variables or adapters
they lack, the definitions versions (``channels``): internals an outsider has no use for.
"""
import hmac

from flask import Blueprint, jsonify, request
from sqlalchemy import text

from app.adapters import channels_runtime, redis_conn
from app.adapters.db import get_engine
from app.entrypoints.app_config import app_config

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def _operator() -> bool:
    """Does the request carry the ops token (PAYROUTER_OPS_TOKEN; none configured: nobody does)?"""
    expected = app_config().ops_token
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                               expected.encode())


@bp.get("/readyz")
def readyz():
    checks = {}
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        redis_conn.get_redis().ping()  # at most REQUEST_TIMEOUT; at once while marked down
        checks["redis"] = "ok"
    except Exception as exc:  # degraded: velocity limits refuse, callbacks and webhooks wait in the database
        checks["redis"] = f"error: {exc.__class__.__name__}"
    build = channels_runtime.state()
    checks["channels"] = build.words()
    ready = checks["database"] == "ok"
    healthy = checks["redis"] == "ok" and checks["channels"] == "ok"
    status = "unavailable" if not ready else ("ready" if healthy else "degraded")
    if _operator():
        body = {"status": status, "checks": checks, "channels": build.to_dict()}
    else:  # status words only: no class names, variable names or versions for whoever asks
        body = {"status": status, "checks": {name: value.split(":", 1)[0] for name, value in checks.items()}}
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    return response
