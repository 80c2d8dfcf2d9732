"""A payment-shaped reference for bench/fixed_reference.py: the rows a payment writes and the PSP call
it makes, on the bare stack (Flask + SQLAlchemy Core + psycopg, urllib3 for the PSP), with nothing of
PayRouter's (no authentication, rate limit, routing, limits, body schema, ORM, metrics or logs).

POST /payment, in the order a payment must keep:

1. one transaction: the idempotency claim, the operation (as processing), its attempt; COMMIT (on
   record before the PSP hears of it);
2. the PSP's charge: the sandbox, the same request PayRouter's adapter sends;
3. one transaction: the attempt closed, the operation's compare-and-set to the PSP's status, the
   journal entry with its two lines (one statement), the event, the stored response; COMMIT.

Seven statements in two transactions (a PayRouter payment runs these seven, its posting also queuing
the system accounts' moves, besides a savepoint and its
release, and the API-key lookup whenever its 50 ms cache misses): the rows go into copies of
PayRouter's own tables (``CREATE TABLE … (LIKE … INCLUDING ALL)``: the same columns and indexes, no
foreign keys), so PostgreSQL's work per row is PayRouter's. What this costs is about the
least a payment can cost on this stack; the fixed reference (8 INSERTs, one transaction) is what a
web endpoint writing money rows costs. Environment: REFERENCE_DATABASE_URL, SANDBOX_URL,
SANDBOX_CHANNEL, SANDBOX_SECRET.
"""
import json
import os
import secrets
from datetime import datetime, timedelta, timezone

import urllib3
from flask import Flask, Response, request
from sqlalchemy import create_engine, text

TABLES = ("idempotency_keys", "operations", "attempts", "journal_entries", "ledger_lines", "events")
engine = create_engine(os.environ["REFERENCE_DATABASE_URL"], pool_size=10, max_overflow=20)
psp = urllib3.PoolManager(maxsize=32)
CHARGES = f"{os.environ.get('SANDBOX_URL', '')}/v1/channels/{os.environ.get('SANDBOX_CHANNEL', 'sandbox')}/charges"
PSP_HEADERS = {"Authorization": f"Bearer {os.environ.get('SANDBOX_SECRET', '')}", "Accept": "application/json",
               "Content-Type": "application/json"}
app = Flask(__name__)

CLAIM = text("INSERT INTO ref_idempotency_keys (merchant_id, key, request_hash, endpoint, status, request_id, "
             "created_at, locked_until, expires_at) VALUES (:m, :key, :hash, '/v1/payments', 'in_flight', :rid, "
             ":now, :until, :expires) ON CONFLICT DO NOTHING RETURNING key")
OPERATION = text("INSERT INTO ref_operations (id, merchant_id, livemode, kind, status, version, amount, currency, "
                 "fee, amount_refunded, reference, idempotency_key, metadata, customer, payment_method, routing, "
                 "channel, query_count, request_id, created_at, updated_at, review) VALUES (:id, :m, false, "
                 "'payment', 'processing', 1, :amount, :currency, 0, 0, :reference, :key, '{}', :customer, "
                 ":method, :routing, 'sandbox', 0, :rid, :now, :now, false)")
ATTEMPT = text("INSERT INTO ref_attempts (id, operation_id, seq, channel, status, request_id, created_at, "
               "updated_at) VALUES (:id, :op, 1, 'sandbox', 'pending', :rid, :now, :now)")
CLOSE = text("WITH closed AS (UPDATE ref_attempts SET status = :status, channel_reference = :ref, raw = :raw, "
             "duration_ms = :ms, updated_at = :now WHERE id = :attempt AND status = 'pending' RETURNING id) "
             "UPDATE ref_operations SET status = :status, version = version + 1, channel_reference = :ref, "
             "updated_at = :now WHERE id = :op AND version = 1 AND EXISTS (SELECT 1 FROM closed) RETURNING id")
POSTING = text("WITH entry AS (INSERT INTO ref_journal_entries (id, merchant_id, kind, source_id, request_id, "
               "created_at) VALUES (:entry, :m, 'payment', :op, :rid, :now) RETURNING id) "
               "INSERT INTO ref_ledger_lines (id, entry_id, account_id, balance_type, amount, currency, request_id, "
               "created_at) SELECT line.id, entry.id, line.account, 'available', line.amount, :currency, :rid, :now "
               "FROM entry, (VALUES (:line1, 'acct_clearing', CAST(:debit AS BIGINT)), "
               "(:line2, 'acct_settlement', CAST(:credit AS BIGINT))) AS line (id, account, amount)")
EVENT = text("INSERT INTO ref_events (id, merchant_id, livemode, type, object_id, data, request_id, relayed, "
             "created_at) VALUES (:id, :m, false, 'payment.succeeded', :op, :data, :rid, false, :now)")
STORED = text("UPDATE ref_idempotency_keys SET status = 'done', response_status = 201, response_body = :body "
              "WHERE merchant_id = :m AND key = :key")


def setup_tables() -> None:
    with engine.begin() as conn:  # each gunicorn worker runs this: one at a time
        conn.execute(text("SELECT pg_advisory_xact_lock(4242)"))
        for table in TABLES:
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS ref_{table} (LIKE {table} INCLUDING ALL)"))


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/payment")
def payment():
    body = request.get_json()
    key = request.headers.get("Idempotency-Key") or secrets.token_hex(12)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rid, op_id, attempt_id = (f"{p}_{secrets.token_hex(12)}" for p in ("req", "pay", "att"))
    merchant = "mer_reference"
    with engine.begin() as conn:
        claim = {"m": merchant, "key": key, "hash": secrets.token_hex(32), "rid": rid, "now": now,
                 "until": now + timedelta(seconds=5), "expires": now + timedelta(days=1)}
        if conn.execute(CLAIM, claim).first() is None:
            return Response(json.dumps({"error": {"type": "idempotency_error"}}), status=409,
                            mimetype="application/json")
        conn.execute(OPERATION, {"id": op_id, "m": merchant, "amount": int(body["amount"]),
                                 "currency": body["currency"], "reference": body["reference"], "key": key,
                                 "customer": json.dumps(body.get("customer")),
                                 "method": json.dumps(body["payment_method"]),
                                 "routing": json.dumps({"channel": "sandbox", "candidates": ["sandbox"]}),
                                 "rid": rid, "now": now})
        conn.execute(ATTEMPT, {"id": attempt_id, "op": op_id, "rid": rid, "now": now})
    charge = {"operation": "payment", "reference": op_id, "amount": int(body["amount"]), "currency": body["currency"],
              "payment_method": body["payment_method"]}
    answer = psp.request("POST", CHARGES, body=json.dumps(charge).encode(),
                         headers={**PSP_HEADERS, "Idempotency-Key": attempt_id}, retries=False)
    result = json.loads(answer.data)
    status = result.get("status", "failed") if answer.status < 300 else "failed"
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    made = {"id": op_id, "object": "payment", "status": status, "amount": int(body["amount"]),
            "currency": body["currency"], "reference": body["reference"], "channel": "sandbox",
            "channel_reference": result.get("id"), "payment_method": body["payment_method"],
            "customer": body.get("customer"), "created": now.isoformat() + "Z"}
    raw = json.dumps(made)
    with engine.begin() as conn:
        conn.execute(CLOSE, {"status": status, "ref": result.get("id"), "raw": json.dumps(result), "ms": 1,
                             "now": now, "attempt": attempt_id, "op": op_id}).first()
        if status == "succeeded":
            conn.execute(POSTING, {"entry": f"je_{secrets.token_hex(12)}", "m": merchant, "op": op_id, "rid": rid,
                                   "now": now, "currency": body["currency"], "line1": f"ll_{secrets.token_hex(12)}",
                                   "line2": f"ll_{secrets.token_hex(12)}", "debit": -int(body["amount"]),
                                   "credit": int(body["amount"])})
        conn.execute(EVENT, {"id": f"evt_{secrets.token_hex(12)}", "m": merchant, "op": op_id, "data": raw,
                             "rid": rid, "now": now})
        conn.execute(STORED, {"body": raw.encode(), "m": merchant, "key": key})
    return Response(raw, status=201, mimetype="application/json")


setup_tables()
