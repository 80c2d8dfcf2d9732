"""The bare-stack baseline for bench/transfers.py and bench/payments.py: a minimal Flask +
SQLAlchemy Core endpoint that parses a JSON body and runs STATEMENTS statements in one
transaction (reads, two balance updates and inserts, like a transfer), then answers JSON."""
import json
import os
import secrets

from flask import Flask, Response, request
from sqlalchemy import create_engine, text

from app.config import normalize_database_url
from app.entrypoints.tuning import tune_gc_for_serving

STATEMENTS = int(os.environ.get("BASELINE_STATEMENTS", "12"))
engine = create_engine(normalize_database_url(os.environ["DATABASE_URL"]), pool_size=10, max_overflow=20)
app = Flask(__name__)
tune_gc_for_serving()  # the same server settings as `payrouter serve`


def setup_tables() -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_accounts (id TEXT PRIMARY KEY, available BIGINT)"))
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_rows (id TEXT PRIMARY KEY, body TEXT)"))
        for i in range(64):
            conn.execute(text("INSERT INTO bench_accounts VALUES (:id, 1000000000) ON CONFLICT DO NOTHING"),
                         {"id": f"a{i}"})


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/bench")
def bench():
    body = request.get_json()
    src, dst, amount = body["from"], body["to"], int(body["amount"])
    row_id = secrets.token_hex(12)
    with engine.begin() as conn:
        done = 0
        for _ in range(max(STATEMENTS - 4, 0)):
            conn.execute(text("SELECT id, available FROM bench_accounts WHERE id = :id"), {"id": src})
            done += 1
        conn.execute(text("UPDATE bench_accounts SET available = available - :a WHERE id = :id AND available >= :a"),
                     {"a": amount, "id": src})
        conn.execute(text("UPDATE bench_accounts SET available = available + :a WHERE id = :id"),
                     {"a": amount, "id": dst})
        conn.execute(text("INSERT INTO bench_rows VALUES (:id, :b)"), {"id": row_id, "b": json.dumps(body)})
        conn.execute(text("SELECT available FROM bench_accounts WHERE id = :id"), {"id": src})
    return Response(json.dumps({"id": row_id, "object": "bench", **body}), status=201, mimetype="application/json")
