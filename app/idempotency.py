"""Idempotent POSTs.

1. Claim: insert ``(merchant, key)`` as the first statement of the request's transaction
   (``ON CONFLICT DO NOTHING``). The primary key makes exactly one concurrent request win;
   the others wait for its transaction to end, then find its row.
2. Execute: the winner runs the use case, and the stored response is written in the
   *same* transaction as the business change, so "committed" and "recorded" cannot part.
3. Others: a different body → 422; a finished row → the stored bytes replayed; a row
   still in flight → wait for it (up to ``WAIT_SECONDS``), then 409.

A claim whose owner died before committing (the row stays ``in_flight`` past
``locked_until``) is taken over by the next retry: nothing was committed, so this cannot
repeat a side effect. 4xx outcomes are stored and replayed; a 5xx releases the key (or, when
part of the work was committed, unlocks it for a retry to take over and resume).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from sqlalchemy import bindparam, delete, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app import context
from app.db import insert_unique_row, request_session, unit_of_work
from app.domain.errors import IdempotencyInFlight, IdempotencyMismatch, InvalidRequest, PayRouterError
from app.models import IdempotencyKey, utcnow

KEEP = timedelta(hours=24)
LOCK = timedelta(seconds=60)
WAIT_SECONDS = 15.0
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    replayed: bool


def check_key(key: str | None) -> str:
    if not key:
        raise InvalidRequest("An Idempotency-Key header is required on every POST", param="Idempotency-Key",
                             code="idempotency_key_missing")
    if len(key) > 255 or not all(32 <= ord(c) < 127 for c in key):
        raise InvalidRequest("Idempotency-Key must be 1–255 printable ASCII characters", param="Idempotency-Key")
    return key


def request_hash(endpoint: str, body: object) -> str:
    canonical = json.dumps([endpoint, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def run(merchant_id: str, key: str, endpoint: str, body: object,
        execute: Callable[[Session], tuple[int, dict]], error_response: Callable[[PayRouterError], tuple[int, dict]]
        ) -> StoredResponse:
    digest = request_hash(endpoint, body)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        with request_session() as session:
            now = utcnow()
            owned = _insert_claim(session, merchant_id, key, endpoint, digest, now)
            if not owned:
                row = session.get(IdempotencyKey, (merchant_id, key))
                if row is None:  # released meanwhile: try again
                    session.rollback()
                    continue
                if row.expires_at < now:
                    session.delete(row)
                    session.commit()
                    continue
                if row.request_hash != digest:
                    raise IdempotencyMismatch(
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        "used with. Try using a key other than '%s' if you meant to execute a different request."
                        % key)
                if row.status == "done":
                    return StoredResponse(row.response_status, row.response_body, True)
                owned = took_over = row.locked_until < now and _take_over(session, row, now)
            else:
                took_over = False
            if owned:
                # A use case may resume what the dead owner of a taken-over claim had committed.
                session.info["idempotency_takeover"] = took_over
                return _execute(session, merchant_id, key, execute, error_response)
            session.rollback()
        if time.monotonic() >= deadline:
            raise IdempotencyInFlight("A request with this Idempotency-Key is still being processed; retry later.")
        time.sleep(POLL_SECONDS)


def _insert_claim(session: Session, merchant_id: str, key: str, endpoint: str, digest: str, now) -> bool:
    """The first statement of the request's transaction. On PostgreSQL a concurrent request with the
    same key waits here until the first one commits or rolls back, then finds its row."""
    return insert_unique_row(session, _KEYS, {
        "merchant_id": merchant_id, "key": key, "request_hash": digest, "endpoint": endpoint, "status": "in_flight",
        "request_id": context.current_request_id(), "created_at": now, "locked_until": now + LOCK,
        "expires_at": now + KEEP})


def _execute(session: Session, merchant_id: str, key: str, execute, error_response) -> StoredResponse:
    """Run the use case in the claim's transaction; store its response in the same transaction.

    A use case that commits part-way (payments, before calling a channel) makes the claim visible
    as ``in_flight``; other requests with the key then wait for it. A 4xx outcome is stored (the
    work undone to a savepoint taken after the claim); a 5xx or a crash releases the key."""
    savepoint = session.begin_nested()
    try:
        status, payload = execute(session)
    except PayRouterError as error:
        status, payload = error_response(error)
        if status >= 500:
            _abandon(session, savepoint, merchant_id, key)
            raise
        if savepoint.is_active:
            savepoint.rollback()  # undo the work, keep the claim
        else:
            session.rollback()  # the claim was committed part-way; undo what came after
    except BaseException:
        _abandon(session, savepoint, merchant_id, key)
        raise
    raw = encode(payload)
    try:
        _finish(session, merchant_id, key, status, raw)
        session.commit()
    except BaseException:
        # Nothing after the last part-way commit is kept; a claim committed part-way is unlocked,
        # so a retry takes it over and resumes (a payment: its operation is on record as processing).
        session.rollback()
        _unlock(merchant_id, key)
        raise
    return StoredResponse(status, raw, False)


def _abandon(session: Session, savepoint, merchant_id: str, key: str) -> None:
    """After a 5xx: nothing committed → the claim goes with the rollback; committed part-way → the
    claim stays, unlocked, so a retry with the same body takes it over and resumes the work."""
    committed_part_way = not savepoint.is_active
    session.rollback()
    if committed_part_way:
        _unlock(merchant_id, key)


def _take_over(session: Session, row: IdempotencyKey, now) -> bool:
    result = session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.merchant_id == row.merchant_id, IdempotencyKey.key == row.key,
               IdempotencyKey.status == "in_flight", IdempotencyKey.locked_until == row.locked_until)
        .values(locked_until=now + LOCK, request_id=context.current_request_id())
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


_KEYS = IdempotencyKey.__table__
_FINISH = (update(_KEYS).where(_KEYS.c.merchant_id == bindparam("m"), _KEYS.c.key == bindparam("k"))
           .values(status="done", response_status=bindparam("http_status"), response_body=bindparam("body")))


def _finish(session: Session, merchant_id: str, key: str, status: int, raw: bytes) -> None:
    session.connection().execute(_FINISH, {"m": merchant_id, "k": key, "http_status": status, "body": raw})


def _unlock(merchant_id: str, key: str) -> None:
    try:
        with unit_of_work() as session:
            session.execute(update(IdempotencyKey).where(
                IdempotencyKey.merchant_id == merchant_id, IdempotencyKey.key == key,
                IdempotencyKey.status == "in_flight").values(locked_until=utcnow() - LOCK)
                .execution_options(synchronize_session=False))
    except OperationalError:
        pass  # the database is down; the claim's lock runs out after LOCK anyway


def purge_expired() -> int:
    """Delete keys past their expiry (run by the batch queue)."""
    with unit_of_work() as session:
        result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < utcnow()))
        return result.rowcount
