"""The fixed reference of bench/fixed_reference.py: bare Flask + SQLAlchemy Core + psycopg.

POST /ref parses the JSON body and runs one transaction of 8 INSERTs (ROWS), then answers JSON.
It does not move with PayRouter: whatever PayRouter does per payment, this stays 8 INSERTs, so the
ratio to it says how much a payment costs against the least a web endpoint writing money rows could.
"""
import json
import os
import secrets

from flask import Flask, Response, request
from sqlalchemy import create_engine, text

ROWS = 8
engine = create_engine(os.environ["REFERENCE_DATABASE_URL"], pool_size=10, max_overflow=20)
app = Flask(__name__)


def setup_table() -> None:
    with engine.begin() as conn:  # each gunicorn worker runs this: one at a time (a fresh database's
        # concurrent CREATE TABLE IF NOT EXISTS fails in one worker, and gunicorn then stops them all)
        conn.execute(text("SELECT pg_advisory_xact_lock(4243)"))
        conn.execute(text("CREATE TABLE IF NOT EXISTS reference_rows "
                          "(id TEXT PRIMARY KEY, seq INT NOT NULL, amount BIGINT NOT NULL, body TEXT NOT NULL)"))


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/ref")
def ref():
    body = request.get_json()
    amount = int(body["amount"])
    base = secrets.token_hex(10)
    stored = json.dumps(body)
    with engine.begin() as conn:
        for seq in range(ROWS):
            conn.execute(text("INSERT INTO reference_rows (id, seq, amount, body) VALUES (:id, :seq, :amount, :body)"),
                         {"id": f"{base}_{seq}", "seq": seq, "amount": amount, "body": stored})
    return Response(json.dumps({"id": base, "object": "reference", "amount": amount}), status=201,
                    mimetype="application/json")


setup_table()
