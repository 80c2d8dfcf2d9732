"""/healthz (the process is up) and /readyz (the process can serve money requests).

Ready means the database answers: without Redis, money requests still work (CONTRACT §5), so
Redis is reported in the body, never a reason for 503. Nor is a stale channel build (this process
could not build the stored channel definitions and runs the previous ones, app.adapters.channels_runtime):
it is ``degraded`` with 200, the reason under ``channels``. A load balancer that took such a process
out would, when every process lacks the same thing, take them all out for a change that left each
still routing correctly on the previous definitions; the failure is for operators (the import's exit
code, ``payrouter_channels_build_stale``, the console), not for the balancer.
"""
from flask import Blueprint, jsonify
from sqlalchemy import text

from app.adapters import channels_runtime, redis_conn
from app.adapters.db import get_engine

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


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
    checks["channels"] = (f"stale: runs version {build.version}, could not build version {build.stored}: {build.error}"
                          if build.stale else "ok")
    ready = checks["database"] == "ok"
    healthy = checks["redis"] == "ok" and checks["channels"] == "ok"
    status = "unavailable" if not ready else ("ready" if healthy else "degraded")
    response = jsonify({"status": status, "checks": checks, "channels": build.to_dict()})
    response.status_code = 200 if ready else 503
    return response
