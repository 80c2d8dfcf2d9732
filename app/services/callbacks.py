"""Channel callbacks and status queries: how an operation left processing becomes final.

receive(): the signature is verified, the callback is stored in the inbox (deduplicated)
and committed before any work is queued, so nothing is lost if Redis or a worker dies.
drain(): an RQ job on the core queue (one queued at a time) that applies stored callbacks in
batches; each settles its operation through the one compare-and-set transition, so
duplicates and out-of-order callbacks change nothing.
A batch writes its journal entries, lines and events once and nets its balance moves per
account (app.adapters.writebehind).
query_status(): asks the channel about an operation still processing (after a timeout
or a lost callback), then again with backoff until it is final.
sweep(): run by every worker every second; re-queues a drain for inbox rows and the due
status queries that no job is carrying (lost with Redis, or a killed worker).
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import timedelta

import redis
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from app import context
from app.adapters import account_channels, channel_definitions, jobs, metrics, writebehind
from app.adapters.channel_answers import ask
from app.adapters.channels_runtime import channel, registry
from app.adapters.db import read_only, unit_of_work
from app.adapters.models import Attempt, ChannelCallback, Operation, new_id, utcnow
from app.adapters.redis_conn import get_redis
from app.config import get_config
from app.domain.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied, ServiceUnavailable
from app.domain.states import CANCELED, FAILED, FINAL, OPEN, PROCESSING, REQUIRES_CAPTURE, SUCCEEDED, allowed
from app.services import disputes, issues, ledger
from app.services.operations import (
    Settlement,
    SettlementRace,
    attempts_of,
    next_query_at,
    settle_all,
    settle_one,
    waiting_changes,
)
from app.services.validation import bad_text
from channels.base import ChannelError, InvalidCallback
from channels.config import UnknownChannel

log = logging.getLogger("payrouter.callbacks")
STALE_INBOX = timedelta(seconds=2)
DRAIN_FLAG = "payrouter:callbacks:drain-queued"
DRAIN_FLAG_SECONDS = 30
DRAIN_BATCH = 100  # callbacks per transaction: a commit per batch, not per callback (docs/benchmarks.md)
SWEEP_LEASE_SECONDS = 10
# A dispute callback whose payment is not final yet stays in the inbox, due again this much later.
DISPUTE_WAIT = timedelta(seconds=5)
# A status query's failed result with this code: the channel has no such operation (its 404).
UNKNOWN_OPERATION = "not_found"
# What a callback or a status query may move an operation to (requires_action is only ever the
# answer to a charge: a customer's step the channel reports later is no news).
SETTLING = frozenset({SUCCEEDED, FAILED, REQUIRES_CAPTURE, CANCELED})


def receive(channel_id: str, headers: dict, body: bytes) -> str:
    """Verify and store one callback; returns the inbox id (the existing one for a duplicate)."""
    if channel_id not in registry():
        if any(cid == channel_id for cid, _definition in channel_definitions.current()):
            # Stored, but this process could not build it: nothing here can verify the signature. A PSP
            # takes a 404 as final and may never send it again; a 503 it retries (another process, or
            # this one once the channel builds). The status queries settle it meanwhile.
            log.warning("callback for %s not taken: channel %s is not run by this process", channel_id,
                        channel_id, extra={"channel": channel_id})
            raise ServiceUnavailable(f"channel '{channel_id}' is not run by this server right now; "
                                     "retry later", code="channel_not_running")
        raise NotFound(f"No such channel: '{channel_id}'")
    try:
        event = channel(channel_id).verify_callback(headers, body)
    except InvalidCallback as exc:
        log.warning("refused a callback for %s: %s", channel_id, exc, extra={"channel": channel_id})
        raise AuthenticationFailed(f"callback signature refused: {exc}", code="invalid_signature") from None
    if (why := malformed(event)) is not None:
        log.warning("refused a callback for %s: %s", channel_id, why, extra={"channel": channel_id})
        raise InvalidRequest(f"callback refused: {why}", code="callback_malformed")
    with read_only() as session:
        attempts = session.execute(select(Attempt.channel, Attempt.channel_reference).where(
            Attempt.operation_id == event.reference)).all() if event.reference else []
    if (why := attempt_mismatch(channel_id, event.channel_reference, attempts)) is not None:
        log.warning("refused a callback for %s claiming %s (%s): %s", channel_id, event.reference,
                    event.channel_reference, why, extra={"channel": channel_id})
        raise PermissionDenied(f"callback refused: {why}", code="callback_attempt_mismatch")
    row = ChannelCallback(id=new_id("cb"), channel=channel_id, dedupe_key=event.dedupe_key, reference=event.reference,
                          channel_reference=event.channel_reference, status=event.status, error_code=event.error_code,
                          dispute=asdict(event.dispute) if event.dispute is not None else None,
                          body=body.decode("utf-8", "replace"), request_id=context.current_request_id())
    try:
        with unit_of_work() as session:
            session.add(row)
    except IntegrityError:
        with unit_of_work() as session:
            existing = session.scalars(select(ChannelCallback).where(
                ChannelCallback.dedupe_key == event.dedupe_key)).one()
            log.info("duplicate callback %s for %s", event.dedupe_key, existing.reference)
            return existing.id
    _enqueue_apply(row.id)
    return row.id


# The inbox's columns (ChannelCallback): what a verified event may hold to be stored and looked up.
_EVENT_FIELDS = (("reference", 200, True), ("channel_reference", 200, True), ("status", 20, False),
                 ("error_code", 60, True), ("dedupe_key", 300, False))


def malformed(event) -> str | None:
    """Why a verified callback's fields cannot be stored or looked up (not text, a NUL or an
    unpaired surrogate, longer than its column), or None. A signature proves who sent a body,
    not that an adapter parsed it into something the database takes: refused 400, never a 5xx."""
    for name, limit, optional in _EVENT_FIELDS:
        value = getattr(event, name, None)
        if value is None and optional:
            continue
        if not isinstance(value, str):
            return f"{name} is not a string"
        if (problem := bad_text(value)) is not None:
            return f"{name} contains {problem}"
        if len(value) > limit:
            return f"{name} is longer than {limit} characters"
    notice = getattr(event, "dispute", None)
    if notice is not None:
        for name in ("channel_reference", "currency", "reason"):
            value = getattr(notice, name, None)
            if isinstance(value, str) and (problem := bad_text(value)) is not None:
                return f"dispute {name} contains {problem}"
        return disputes.malformed(asdict(notice))
    return None


def attempt_mismatch(channel_id: str, channel_reference: str | None, attempts) -> str | None:
    """Why a callback does not match the attempt it claims, or None. ``attempts``: the claimed
    operation's attempts (anything with ``channel`` and ``channel_reference``). A callback must come
    from a channel the operation was sent to and carry the reference that channel gave the attempt;
    an attempt whose answer never came (a timeout: no reference on record) takes the one the
    callback brings, as a status query's answer would."""
    on_channel = [a for a in attempts if a.channel == channel_id]
    if not on_channel:
        return "the operation has no attempt on this channel"
    if any(a.channel_reference is None or a.channel_reference == channel_reference for a in on_channel):
        return None
    return "the channel reference is not the one of the operation's attempt on this channel"


def _enqueue_apply(callback_id: str) -> None:
    """Make sure a drain job is queued (one at a time: callbacks are applied in batches)."""
    try:
        kick_drain()
    except redis.RedisError:
        log.warning("Redis unreachable: callback %s kept in the inbox for the sweeper", callback_id)


def kick_drain() -> bool:
    if get_redis().set(DRAIN_FLAG, "1", nx=True, ex=DRAIN_FLAG_SECONDS):
        jobs.enqueue(jobs.CORE, "app.services.callbacks.drain")
        return True
    return False


def drain(batch: int = DRAIN_BATCH) -> int:
    """Apply every stored callback not yet applied, oldest first, ``batch`` per transaction.
    Several workers may drain at once: rows are claimed with SKIP LOCKED on PostgreSQL (SQLite
    serialises writers anyway). A batch that fails is applied again one callback at a time, so
    one bad callback is set aside (outcome ``error``; its operation is still settled by status
    queries) instead of holding up the inbox."""
    get_redis().delete(DRAIN_FLAG)  # callbacks arriving from now on queue another drain
    applied = 0
    while True:
        failed: list[str] = []
        with unit_of_work() as session:
            rows = list(session.scalars(
                select(ChannelCallback).where(ChannelCallback.processed_at.is_(None),
                                              ChannelCallback.received_at <= utcnow())
                .order_by(ChannelCallback.received_at, ChannelCallback.id).limit(batch)
                .with_for_update(skip_locked=True)))
            ops, attempts = _load(session, rows)
            try:
                with session.begin_nested(), writebehind.batched(session, ledger.apply_moves):
                    _apply_batch(session, rows, ops, attempts)
            except SettlementRace:  # retried one by one below, where each race is settled exactly
                log.info("a batch of %s callbacks met a concurrent change; applying them one at a time", len(rows))
                failed = [row.id for row in rows]
            except Exception:  # noqa: BLE001 - retried one by one below
                log.exception("a batch of %s callbacks failed; applying them one at a time", len(rows))
                failed = [row.id for row in rows]
            if failed:  # the savepoint took the batch's writes back: no object may show them
                session.expire_all()
        if not failed:  # committed: received → applied, per callback
            metrics.callbacks_applied([row.received_at for row in rows if row.processed_at is not None])
        for callback_id in failed:
            apply(callback_id)
        applied += len(rows)
        if len(rows) < batch:
            return applied


def _load(session, rows: list[ChannelCallback]) -> tuple[dict, dict]:
    """The batch's operations and their attempts, in two queries."""
    refs = {row.reference for row in rows if row.reference}
    if not refs:
        return {}, {}
    ops = {op.id: op for op in session.scalars(select(Operation).where(Operation.id.in_(refs)))}
    attempts: dict[str, list[Attempt]] = {op_id: [] for op_id in ops}
    for attempt in session.scalars(select(Attempt).where(Attempt.operation_id.in_(ops)).order_by(Attempt.seq)):
        attempts[attempt.operation_id].append(attempt)
    return ops, attempts


def apply(callback_id: str) -> str:
    """Apply one stored callback to its operation, exactly once; a callback that cannot be applied
    is set aside with outcome ``error`` (and logged) rather than retried forever."""
    try:
        with unit_of_work() as session:
            row = session.get(ChannelCallback, callback_id, with_for_update=True)
            if row is None or row.processed_at is not None:
                return "done"
            op = session.get(Operation, row.reference) if row.reference else None
            received, outcome = row.received_at, _apply_row(session, row, op, {op.id: attempts_of(session, op)}
                                                            if op else {})
        if outcome not in disputes.WAITING:  # still in the inbox
            metrics.callbacks_applied([received])
        return outcome
    except Exception as exc:  # noqa: BLE001 - recorded on the row below
        log.exception("callback %s could not be applied", callback_id)
        with unit_of_work() as session:
            row = session.get(ChannelCallback, callback_id)
            if row is not None and row.processed_at is None:
                row.processed_at, row.outcome = utcnow(), f"error:{exc.__class__.__name__}"[:40]
        return "error"


def _apply_batch(session, rows: list[ChannelCallback], ops: dict, attempts: dict) -> None:
    """A drain batch: what each callback means is decided first (``_verdicts``), then every
    settlement is applied at once (``settle_all``: two round trips for the batch; a race raises
    SettlementRace, and the drain replays the batch one by one), then each callback is marked."""
    # The work runs in the context of the request that caused it (the channel echoes our request
    # id); one id per callback for all it writes and logs, a fresh one if the channel gave none.
    request_ids = {row.id: row.request_id or context.new_request_id() for row in rows}
    outcomes = _verdicts(rows, ops, attempts)
    settlements = [_settlement(ops[row.reference], row.status, row.error_code, row.channel_reference,
                               attempts.get(row.reference, []), request_ids[row.id])
                   for row in rows if outcomes[row.id] == "applied"]
    if settlements:
        settle_all(session, settlements)
    _apply_disputes(session, rows, ops, outcomes, request_ids)
    _mark(rows, ops, outcomes, request_ids)


def _apply_row(session, row: ChannelCallback, op: Operation | None, attempts: dict) -> str:
    """One callback (``apply``): decided as in a batch of one, settled with ``settle``, which knows
    its race exactly: an operation settled meanwhile makes the callback a duplicate."""
    request_ids = {row.id: row.request_id or context.new_request_id()}
    ops = {op.id: op} if op is not None else {}
    with context.bound(request_ids[row.id], op.merchant_id if op else None, row.reference):
        outcomes = _verdicts([row], ops, attempts)
        if outcomes[row.id] == "applied" and not settle_one(session, _settlement(
                op, row.status, row.error_code, row.channel_reference, attempts.get(op.id, []))):
            outcomes[row.id] = "duplicate"
        _apply_disputes(session, [row], ops, outcomes, request_ids)
        _mark([row], ops, outcomes, request_ids)
    return outcomes[row.id]


def _verdicts(rows: list[ChannelCallback], ops: dict, attempts: dict) -> dict[str, str]:
    """What each callback means, in order: ``unknown_operation`` (no such operation on this
    channel), ``attempt_mismatch``, a dispute's screen (app.services.disputes.screen: waiting,
    not disputable, or to be judged and applied by ``_apply_disputes`` once this batch's settlements
    are written), ``ignored`` (not a final status), ``duplicate`` (the operation
    is final, an earlier callback of the same rows settles it, or the move is not in the state
    machine) or ``applied`` (to be settled; one by one, a lost race still makes it a duplicate)."""
    outcomes: dict[str, str] = {}
    settling: set[str] = set()
    for row in rows:
        op = ops.get(row.reference)
        if op is None or op.channel != row.channel:
            outcomes[row.id] = "unknown_operation"
        elif _mismatched(row, attempts.get(op.id, [])):
            outcomes[row.id] = "attempt_mismatch"
        elif row.dispute is not None:  # its amount is judged by _apply_disputes, after this batch's settlements
            outcomes[row.id] = disputes.screen(op, row.dispute)
        elif row.status not in SETTLING:
            outcomes[row.id] = "ignored"
        elif op.status in FINAL or op.id in settling or not allowed(op.status, row.status, op.kind):
            outcomes[row.id] = "duplicate"
        else:
            outcomes[row.id] = "applied"
            settling.add(op.id)
    return outcomes


def _apply_disputes(session, rows: list[ChannelCallback], ops: dict, outcomes: dict, request_ids: dict) -> None:
    """The dispute callbacks to apply (app.services.disputes), in order, each in its context: applied,
    or a duplicate if it changed nothing (reported already, or closed already)."""
    for row in rows:
        if outcomes[row.id] == disputes.APPLY:
            op = ops[row.reference]
            with context.bound(request_ids[row.id], op.merchant_id, row.reference):
                outcomes[row.id] = disputes.report(session, op, row.dispute)


def _mark(rows: list[ChannelCallback], ops: dict, outcomes: dict, request_ids: dict) -> None:
    """Each callback done with its outcome, and logged in its context. A dispute callback waiting
    for its payment or its payment's refunds in flight (``disputes.WAITING``) stays in the inbox, its
    ``received_at`` moved to when it is due again (``DISPUTE_WAIT``): the drain takes only due rows,
    and the sweep re-queues a drain for it then, as for any callback left unapplied."""
    now = utcnow()
    for row in rows:
        op = ops.get(row.reference)
        with context.bound(request_ids[row.id], op.merchant_id if op else None, row.reference):
            if outcomes[row.id] in disputes.WAITING:
                row.received_at, row.outcome = now + DISPUTE_WAIT, outcomes[row.id]
            else:
                row.processed_at, row.outcome = now, outcomes[row.id]
            log.info("callback %s for %s: %s", row.dedupe_key, row.reference, row.outcome)


def _mismatched(row: ChannelCallback, attempts: list) -> bool:
    """Checked again when applied: the attempt's reference may have been recorded since receipt."""
    why = attempt_mismatch(row.channel, row.channel_reference, attempts)
    if why is not None:
        log.warning("callback %s for %s not applied: %s", row.dedupe_key, row.reference, why)
    return why is not None


def _settlement(op: Operation, status: str, code: str | None, channel_reference: str | None, attempts: list,
                request_id: str | None = None, changes: dict | None = None) -> Settlement:
    """A channel's word on an operation (a callback, a status query's answer) as a settlement: its
    error code is the failure message too."""
    return Settlement(op, status, code, code, attempts, channel_reference, request_id, changes)


def query_status(operation_id: str) -> str:
    """Ask the channel how an operation still processing ended; reschedule if still unknown.
    No transaction is held open during the channel call: the outcome is applied afterwards
    through the compare-and-set, so a callback settling it meanwhile simply wins.

    "Unknown operation" (``UNKNOWN_OPERATION``) about an operation the channel had acknowledged
    (it answered with its reference) fails nothing: the operation stays processing, flagged for
    review with a reconciliation issue, and is asked again until the schedule ends; a callback,
    a later answer or an operator settles it. Never acknowledged (a timeout), the channel never
    had it: it failed. Found final, the issues reconciliation raised while it was pending close
    if it ended as the statement said."""
    with read_only() as session:
        op = session.get(Operation, operation_id)
        if op is None or not op.channel:
            return "final"
        session.expunge(op)
    if op.status not in OPEN:
        with unit_of_work() as session:
            issues.settled_as_stated(session, op)
        return "final"
    channel_id, reference, channel_reference = op.channel, op.id, op.channel_reference
    with context.bound(op.request_id, op.merchant_id, op.id):
        try:  # asked with the credentials it was made with (a merchant's channel account, or the platform's)
            adapter = account_channels.adapter(channel_id, op.channel_account_id)
        except UnknownChannel:
            return _put_off(operation_id, channel_id)
        try:
            result = ask(adapter, "query", reference, channel_reference)
        except ChannelError as exc:
            result = None
            log.warning("status query of %s at %s failed: %s", reference, channel_id, exc)
        with unit_of_work() as session:
            op = session.get(Operation, operation_id)
            if op.status not in OPEN:
                issues.settled_as_stated(session, op)
                return "final"
            forgotten = result is not None and result.status == FAILED and result.error_code == UNKNOWN_OPERATION
            if forgotten and op.channel_reference and op.status == PROCESSING:
                return _review(session, op)
            if result is not None and result.status in SETTLING and allowed(op.status, result.status, op.kind):
                settle_one(session, _settlement(op, result.status, result.error_code, result.channel_reference,
                                                attempts_of(session, op), changes=_answered(session, op, result)))
                issues.settled_as_stated(session, op)
                return result.status
            if result is not None and result.status == op.status == REQUIRES_CAPTURE and result.capture_before:
                op.next_query_at = waiting_changes(result)["next_query_at"]  # asked again when it expires
                return op.status
            _reschedule(op)
            return op.status


def _answered(session, op: Operation, result) -> dict:
    """The columns a status query's answer sets beyond the status: an authorization's expiry, or
    (a capture whose answer was lost) the amount captured and its fee."""
    from app.services.capture import captured_changes

    if result.status == SUCCEEDED and op.status == REQUIRES_CAPTURE:
        return captured_changes(session, op, result.amount_captured or op.amount)
    return waiting_changes(result)


def put_off_delay(created_at, now) -> timedelta:
    """How long a status query this process cannot ask (its channel not run here) is put off: as
    long as the operation is old, between the schedule's first and last delays (backoff without a
    counter: the schedule's own ``query_count`` counts only the queries asked)."""
    delays = get_config().status_query_delays
    age = max((now - created_at).total_seconds(), 0.0)
    return timedelta(seconds=min(max(age, delays[0]), delays[-1]))


def _put_off(operation_id: str, channel_id: str) -> str:
    """The operation's channel is not run by this process (its definition not buildable here, or
    removed): nothing asked; the query is put off with backoff (never left due, where the sweep would
    take it again and again), logged and counted."""
    now = utcnow()
    with unit_of_work() as session:
        op = session.get(Operation, operation_id)
        if op.status not in OPEN:
            return "final"
        op.next_query_at = now + put_off_delay(op.created_at, now)
        log.warning("status query of %s not asked: channel %s is not run by this process (not built here, or "
                    "removed); asked again at %s", op.id, channel_id, op.next_query_at.isoformat(timespec="seconds"),
                    extra={"channel": channel_id})
    metrics.QUERIES_PUT_OFF.labels(channel_id).inc()
    return "put_off"


def _reschedule(op: Operation) -> None:
    """The next status query; one under review is asked until the schedule ends, then left to a
    callback or an operator (the last delay does not repeat for it)."""
    op.query_count += 1
    ended = op.query_count >= len(get_config().status_query_delays)
    op.next_query_at = None if op.review and ended else next_query_at(op.query_count)


def _review(session, op: Operation) -> str:
    """Flag an acknowledged operation the channel no longer knows (only while it is processing: a
    callback that settled it meanwhile wins) and open its reconciliation issue."""
    if not op.review:
        flagged = session.execute(update(Operation).where(Operation.id == op.id, Operation.status == PROCESSING)
                                  .values(review=True).execution_options(synchronize_session=False)).rowcount
        if flagged != 1:
            return "final"
        set_committed_value(op, "review", True)
        found = {"issue": issues.UNKNOWN_AT_CHANNEL, "channel_reference": op.channel_reference,
                 "ours": {"id": op.id, "status": op.status, "amount": op.amount, "currency": op.currency}}
        issues.record(session, op.channel, [found])
        log.warning("%s: channel %s answered 'unknown operation' about %s, which it had acknowledged; left "
                    "processing for review (issue %s)", op.id, op.channel, op.channel_reference, found["id"],
                    extra={"channel": op.channel})
    _reschedule(op)
    return "review"


def sweep(batch: int = 200) -> dict:
    """Re-queue stored callbacks not yet applied and status queries that are due: the longest due
    first, of the channels this process runs (an operation of a channel it does not run is left to
    a process that does; never ``batch`` such operations taken again and again while the others
    wait)."""
    now = utcnow()
    runs = registry().ids()
    with unit_of_work() as session:
        callbacks = list(session.scalars(select(ChannelCallback.id).where(
            ChannelCallback.processed_at.is_(None), ChannelCallback.received_at < now - STALE_INBOX).limit(batch)))
        due = list(session.scalars(select(Operation.id).where(
            Operation.status.in_(sorted(OPEN)), Operation.next_query_at.is_not(None),
            Operation.next_query_at <= now, Operation.channel.in_(runs))
            .order_by(Operation.next_query_at, Operation.id).limit(batch))) if runs else []
    r = get_redis()
    queued = {"callbacks": 0, "queries": 0}
    if callbacks and r.set("payrouter:sweep:drain", "1", ex=SWEEP_LEASE_SECONDS, nx=True):
        jobs.enqueue(jobs.CORE, "app.services.callbacks.drain")
        queued["callbacks"] = len(callbacks)
    for op_id in due:
        job_id = f"query-{op_id}"
        # One job in flight per operation: a lease key keeps the next sweeps from queueing it again.
        if r.set(f"payrouter:sweep:{job_id}", "1", ex=SWEEP_LEASE_SECONDS, nx=True):
            jobs.enqueue(jobs.CORE, "app.services.callbacks.query_status", op_id, job_id=job_id)
            queued["queries"] += 1
    return queued
