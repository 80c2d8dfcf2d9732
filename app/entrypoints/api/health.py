"""/healthz (the process is up) and /readyz (the process can serve money requests).

Ready means the database answers: without Redis, money requests still work (CONTRACT §5), so
Redis is reported in the body, never a reason for 503.
"""
from flask import Blueprint, jsonify
from sqlalchemy import text

from app.adapters import redis_conn
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
    ready = checks["database"] == "ok"
    status = "unavailable" if not ready else ("ready" if checks["redis"] == "ok" else "degraded")
    response = jsonify({"status": status, "checks": checks})
    response.status_code = 200 if ready else 503
    return response
