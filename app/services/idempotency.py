"""Idempotent POSTs.

1. Claim: insert ``(merchant, key)`` as the first statement of the request's transaction
   (``ON CONFLICT DO NOTHING``). The primary key makes exactly one concurrent request win;
   the others wait for its transaction to end, then find its row.
2. Execute: the winner runs the use case, and the stored response is written in the
   *same* transaction as the business change, so "committed" and "recorded" cannot part.
3. Others: a different body → 422; a finished row → the stored bytes replayed; a row
   still in flight → wait for it (up to ``WAIT_SECONDS``), then 409.

A claim is a lease: ``locked_until`` lies ``LEASE`` ahead, and the process that owns it renews
it every ``RENEW_SECONDS`` while the request runs (one statement per process for all its long
requests, ``Leases``). A claim whose owner died or lost the database (it stays ``in_flight``
past ``locked_until``) is taken over by the next retry, compare-and-set on ``locked_until``
so two retries never both take it, within ``LEASE`` of the owner's last renewal: a payment's
retry then resumes the operation its owner had committed (on record with its attempt, settled
by status queries) and never calls a channel again. 4xx outcomes are stored and replayed; a
5xx releases the key (or, when part of the work was committed, unlocks it for a retry to take
over and resume).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from sqlalchemy import bindparam, delete, tuple_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app import context
from app.adapters.db import (
    before_commit,
    committed,
    execute_all_matched,
    insert_unique_row,
    request_session,
    unit_of_work,
)
from app.adapters.models import IdempotencyKey, utcnow
from app.config import Config, get_config
from app.domain.errors import IdempotencyInFlight, IdempotencyMismatch, InvalidRequest, PayRouterError
from app.services import ledger

log = logging.getLogger("payrouter.idempotency")

KEEP = timedelta(hours=24)
LEASE = timedelta(seconds=5)  # a retry takes over a claim no one renewed for this long
RENEW_SECONDS = 1.5  # how often the owner's process renews the leases of its running requests
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
    try:
        return _run(merchant_id, key, endpoint, body, execute, error_response)
    except SQLAlchemyError as error:
        if not ledger.refused_at_commit(error):
            raise
    # A customer's balance moved at the COMMIT fell short: nothing was committed (the claim went too),
    # so the request runs again with its moves made as it goes, and stores the 402 it always did.
    with ledger.moves_as_they_go():
        return _run(merchant_id, key, endpoint, body, execute, error_response)


def _run(merchant_id: str, key: str, endpoint: str, body: object, execute, error_response) -> StoredResponse:
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
                with _leases.holding(merchant_id, key):
                    return _execute(session, merchant_id, key, execute, error_response)
            session.rollback()
        if time.monotonic() >= deadline:
            raise IdempotencyInFlight("A request with this Idempotency-Key is still being processed; retry later.")
        time.sleep(POLL_SECONDS)


def _insert_claim(session: Session, merchant_id: str, key: str, endpoint: str, digest: str, now) -> bool:
    """The first statement of the request's transaction. On PostgreSQL a concurrent request with the
    same key waits here until the first one commits or rolls back, then finds its row."""
    return insert_unique_row(session, _KEYS, {
        "merchant_id": merchant_id, "key": key, "request_hash": digest, "endpoint": endpoint[:_ENDPOINT_MAX],
        "status": "in_flight",
        "request_id": context.current_request_id(), "created_at": now, "locked_until": now + LEASE,
        "expires_at": now + KEEP})


def _execute(session: Session, merchant_id: str, key: str, execute, error_response) -> StoredResponse:
    """Run the use case in the claim's transaction; store its response in the same transaction.

    A use case that commits part-way (payments, before calling a channel) makes the claim visible
    as ``in_flight``; other requests with the key then wait for it. A 4xx outcome is stored (the
    work undone to a savepoint taken after the claim); a 5xx or a crash releases the key."""
    savepoint = session.begin_nested()
    claimed = time.monotonic()

    def fresh_lease(session: Session) -> None:
        """Each commit of the work (a payment commits before its channel call) carries a lease
        counted from now. The claim becomes visible to other requests only with the first one, so
        work that took longer than LEASE before it would show a claim already run out, taken over
        at once by a retry waiting on it while its owner goes on. Costs nothing for quick work."""
        nonlocal claimed
        if time.monotonic() - claimed >= RENEW_SECONDS:
            session.connection().execute(_RENEW, {"m": merchant_id, "k": key, "until": utcnow() + LEASE})
            claimed = time.monotonic()

    stop_renewing = before_commit(session, fresh_lease)
    try:
        return _run_and_store(session, savepoint, merchant_id, key, execute, error_response)
    finally:
        stop_renewing()


def _run_and_store(session: Session, savepoint, merchant_id: str, key: str, execute, error_response
                   ) -> StoredResponse:
    try:
        status, payload = execute(session)
    except PayRouterError as error:
        status, payload = error_response(error)
        if status >= 500:
            _abandon(session, not savepoint.is_active, merchant_id, key)
            raise
        if savepoint.is_active:
            savepoint.rollback()  # undo the work, keep the claim
            committed_part_way = False
        else:
            session.rollback()  # the claim was committed part-way; undo what came after
            committed_part_way = True
    except BaseException:
        _abandon(session, not savepoint.is_active, merchant_id, key)
        raise
    else:
        committed_part_way = not savepoint.is_active
    raw = encode(payload)
    try:
        # The stored response, the savepoint's release and the COMMIT in one round trip (PostgreSQL's
        # pipeline: the rows a transfer moved stay locked only that long); a failure among them comes
        # out of the block.
        with committed(session):
            _finish(session, merchant_id, key, status, raw)
    except BaseException:
        # Nothing after the last part-way commit is kept (a transfer refused at its COMMIT: nothing at
        # all, the claim included, so there is nothing to unlock).
        _abandon(session, committed_part_way, merchant_id, key)
        raise
    return StoredResponse(status, raw, False)


def _abandon(session: Session, committed_part_way: bool, merchant_id: str, key: str) -> None:
    """After a 5xx or a failed COMMIT: nothing committed → the claim goes with the rollback; committed
    part-way → the claim stays, unlocked, so a retry with the same body takes it over and resumes the
    work (a payment: its operation is on record as processing)."""
    session.rollback()
    if committed_part_way:
        _unlock(merchant_id, key)


def _take_over(session: Session, row: IdempotencyKey, now) -> bool:
    """Compare-and-set on the lease this request saw run out: of two retries, one takes the claim."""
    return execute_all_matched(session.connection(), _TAKE_OVER, [{
        "m": row.merchant_id, "k": row.key, "seen": row.locked_until, "until": now + LEASE,
        "request_id": context.current_request_id()}])


_KEYS = IdempotencyKey.__table__
# The path is kept for operators (and to find a creation's stored response); the request hash binds the
# key to the whole path. A longer one (an action on an id no object has) is cut to the column, so the
# request goes on to its 404 instead of a 500 from the database ("value too long").
_ENDPOINT_MAX = _KEYS.c.endpoint.type.length
_TAKE_OVER = (update(_KEYS).where(_KEYS.c.merchant_id == bindparam("m"), _KEYS.c.key == bindparam("k"),
                                  _KEYS.c.status == "in_flight", _KEYS.c.locked_until == bindparam("seen"))
              .values(locked_until=bindparam("until"), request_id=bindparam("request_id")))
_RENEW = (update(_KEYS).where(_KEYS.c.merchant_id == bindparam("m"), _KEYS.c.key == bindparam("k"),
                              _KEYS.c.status == "in_flight").values(locked_until=bindparam("until")))
_FINISH = (update(_KEYS).where(_KEYS.c.merchant_id == bindparam("m"), _KEYS.c.key == bindparam("k"))
           .values(status="done", response_status=bindparam("http_status"), response_body=bindparam("body")))


def _finish(session: Session, merchant_id: str, key: str, status: int, raw: bytes) -> None:
    session.connection().execute(_FINISH, {"m": merchant_id, "k": key, "http_status": status, "body": raw})


def _unlock(merchant_id: str, key: str) -> None:
    try:
        with unit_of_work() as session:
            session.execute(update(IdempotencyKey).where(
                IdempotencyKey.merchant_id == merchant_id, IdempotencyKey.key == key,
                IdempotencyKey.status == "in_flight").values(locked_until=utcnow() - LEASE)
                .execution_options(synchronize_session=False))
    except SQLAlchemyError:
        pass  # the database is down; no one renews the lease, so it runs out within LEASE anyway


class Leases:
    """The claims this process's requests hold, renewed by one thread of the process: every
    ``RENEW_SECONDS`` one UPDATE moves ``locked_until`` of all claims held longer than that ``LEASE``
    ahead. A request that ends (answered or failed) stops renewing its claim at once. Nothing to
    renew costs nothing; a renewal that fails (the database is down) is tried again next time, and
    meanwhile the leases run out, as they should: their owners cannot finish either. A claim is
    renewed in the database of the configuration its request ran under (one, but for tests that
    serve apps of several configurations from one process)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str, str], float] = {}  # (database, merchant, key) → last renewed (monotonic)
        self._configs: dict[str, Config] = {}  # database URL → a configuration of it
        self._thread: threading.Thread | None = None
        self._pid = 0

    def holding(self, merchant_id: str, key: str):
        config = get_config()
        self._configs.setdefault(config.database_url, config)
        return _Holding(self, (config.database_url, merchant_id, key))

    def _hold(self, claim: tuple[str, str, str]) -> None:
        with self._lock:
            self._held[claim] = time.monotonic()
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="payrouter-idempotency-leases", daemon=True)
                self._pid = os.getpid()
                self._thread.start()

    def _release(self, claim: tuple[str, str, str]) -> None:
        with self._lock:
            self._held.pop(claim, None)

    def _run(self) -> None:
        while True:
            time.sleep(RENEW_SECONDS / 3)
            try:
                self.renew_due()
            except Exception:  # noqa: BLE001 - the database may be down: the leases run out meanwhile
                log.debug("idempotency leases not renewed", exc_info=True)

    def renew_due(self) -> int:
        """Renew the leases held longer than RENEW_SECONDS since their last renewal."""
        started = time.monotonic()
        with self._lock:
            due = [claim for claim, renewed in self._held.items() if started - renewed >= RENEW_SECONDS]
        if not due:
            return 0
        by_database: dict[str, list[tuple[str, str]]] = {}
        for database, merchant_id, key in due:
            by_database.setdefault(database, []).append((merchant_id, key))
        for database, claims in by_database.items():
            with unit_of_work(self._configs[database]) as session:
                session.execute(update(IdempotencyKey).where(
                    tuple_(IdempotencyKey.merchant_id, IdempotencyKey.key).in_(claims),
                    IdempotencyKey.status == "in_flight").values(locked_until=utcnow() + LEASE)
                    .execution_options(synchronize_session=False))
        with self._lock:
            for claim in due:
                if claim in self._held:
                    self._held[claim] = started
        return len(due)


class _Holding:
    def __init__(self, leases: Leases, claim: tuple[str, str, str]):
        self.leases, self.claim = leases, claim

    def __enter__(self):
        self.leases._hold(self.claim)

    def __exit__(self, *_exc):
        self.leases._release(self.claim)


_leases = Leases()


def purge_expired() -> int:
    """Delete keys past their expiry (run by the batch queue)."""
    with unit_of_work() as session:
        result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < utcnow()))
        return result.rowcount
