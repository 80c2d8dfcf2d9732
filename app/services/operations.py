"""What every payment-like operation shares: the channel loop with failover, and settling
an outcome (compare-and-set transition, ledger postings, event, limits given back) in one
transaction.

Failover: a fault that proves nothing was charged (ChannelUnavailable: refused, 5xx) is
an attempt that failed, and the next candidate is tried. A decline is final, unless the
decision's ``retry`` names its code (a soft decline): then the next candidate is tried too. A timeout is
an unknown outcome: never re-routed; the operation stays processing and is settled by
status queries (app.services.callbacks.query_status) or a late callback.

A merchant's own channel account is that merchant's, not the channel's: a call it could not make
(its adapter's ``with_credentials`` raised, or its request was refused before sending:
``RequestNotSent``) fails the attempt ``channel_account_unusable`` and the next candidate is tried
(nothing was sent); the PSP refusing its credentials (``CredentialsRefused``) is a decline
``channel_credentials_refused``. Neither counts against the channel's circuit, so one merchant's
credentials can never open it for every merchant.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any, Callable, Mapping

from sqlalchemy import bindparam, insert, literal, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app import context
from app.adapters import account_channels, metrics, writebehind
from app.adapters.account_channels import AccountUnusable
from app.adapters.channel_answers import AdapterFault, ask, fault_text
from app.adapters.channels_runtime import callback_url
from app.adapters.db import committed, execute_all_matched, pipelined
from app.adapters.models import Account, Attempt, Operation, new_id, utcnow
from app.config import get_config
from app.domain import postings
from app.domain.channel_outcomes import says_nothing_of_the_channel
from app.domain.postings import Role
from app.domain.states import (
    CANCELED,
    FAILED,
    FINAL,
    PENDING,
    PROCESSING,
    REQUIRES_ACTION,
    REQUIRES_CAPTURE,
    SUCCEEDED,
)
from app.services import breaker, channel_accounts, events, issues, ledger, orders, representation, success_rates
from app.services.transitions import transition, transition_all, transition_beside
from channels.base import (
    ChannelError,
    ChannelResult,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRequest,
    CredentialsRefused,
    OperationNotSupported,
    PayoutRequest,
    RefundRequest,
    RequestNotSent,
)

log = logging.getLogger("payrouter.operations")


def attempts_of(session: Session, op: Operation) -> list[Attempt]:
    return list(session.scalars(select(Attempt).where(Attempt.operation_id == op.id).order_by(Attempt.seq)))


def view_all(session: Session, ops: list[Operation]) -> list[dict]:
    """``view`` of several operations (a page of a list), their attempts read in one statement."""
    if not ops:
        return []
    attempts: dict[str, list[Attempt]] = {op.id: [] for op in ops}
    for attempt in session.scalars(select(Attempt).where(Attempt.operation_id.in_(list(attempts)))
                                   .order_by(Attempt.operation_id, Attempt.seq)):
        attempts[attempt.operation_id].append(attempt)
    return [representation.operation(op, attempts[op.id]) for op in ops]


@dataclass(frozen=True)
class Made:
    """An operation as a create leaves it, with its attempts when this session already holds them
    (None: ``view`` reads them), so that answering with it costs no further query."""

    operation: Operation
    attempts: list[Attempt] | None = None


def view(session: Session, op: Operation, attempts: list[Attempt] | None = None) -> dict:
    """The operation as the API shows it; ``attempts``: its attempts if the caller holds them."""
    return representation.operation(op, attempts if attempts is not None else attempts_of(session, op))


def next_query_at(query_count: int):
    delays = get_config().status_query_delays
    return utcnow() + timedelta(seconds=delays[min(query_count, len(delays) - 1)])


def _request(op: Operation, payment: Operation | None, attempt: Attempt, token: str | None = None):
    common = dict(reference=op.id, amount=op.amount, currency=op.currency, callback_url=callback_url(attempt.channel),
                  idempotency_key=attempt.id)
    if op.kind in ("payment", "topup"):
        return "charge", ChargeRequest(operation=op.kind, payment_method=op.payment_method or {}, token=token,
                                       capture_method=op.capture_method or "automatic", **common)
    if op.kind == "withdrawal":
        return "payout", PayoutRequest(destination=op.destination or {}, **common)
    return "refund", RefundRequest(payment_channel_reference=payment.channel_reference, **common)


def run_channels(session: Session, op: Operation, attempts: list[Attempt] | None = None, *,
                 token: str | None = None, retry: Mapping[str, Any] | None = None,
                 write: Callable[[], None] | None = None) -> Made:
    """Call the candidates in order until one answers; commit before each call (the first commit
    also carries a newly written operation, so it is on record with its first attempt before any
    channel hears of it) and after an answer that leaves the operation open. A final outcome is
    left uncommitted: the caller (app.services.idempotency) commits it together with the stored response,
    and if that commit fails the operation is still on record as processing, so status queries
    settle it. ``attempts``: the operation's attempts if the caller knows them.

    ``token``: the card token, handed to the adapter in the request and kept nowhere else.
    ``retry``: the decision's ``{"on": [codes], "max": n}`` (contract §3): a decline with one of
    those codes (a soft decline) is recorded on its attempt and the next candidate is tried, at
    most ``max`` times; if no later candidate takes the payment, the last soft decline stands.
    ``write``: the insert of a new operation the caller left unwritten (pending, version 0): it is
    then inserted as processing with its first channel, the row a pending insert and its first
    transition would leave, in one statement instead of two."""
    payment = session.get(Operation, op.payment_id) if op.payment_id else None
    candidates = list(op.routing.get("candidates") or [])
    accounts = channel_accounts.for_candidates(session, op, candidates, payment)  # the merchant's own, per channel
    attempts = attempts_of(session, op) if attempts is None else attempts
    seq = len(attempts)
    retry_on, retries_left = frozenset((retry or {}).get("on") or ()), (retry or {}).get("max", 0)
    declined = None  # the last soft decline passed on to the next candidate
    unusable = None  # the message of the last attempt a merchant's own account could not make
    for index, channel_id in enumerate(candidates):
        if not breaker.allow(channel_id):
            _note_drop(op, channel_id, "circuit_open")
            continue
        seq += 1
        account_id, sealed = accounts.get(channel_id, (None, None))
        if not _use_channel(session, op, channel_id, account_id, write):
            session.rollback()
            return Made(op, attempts)
        write = None
        with committed(session):  # the attempt is on record before the channel hears of it (one round trip)
            attempt = _write_attempt(session, op, seq, channel_id, account_id)
        attempts.append(attempt)
        verb, request = _request(op, payment, attempt, token)
        started = time.perf_counter()
        try:
            result = ask(account_channels.adapter(channel_id, account_id, sealed), verb, request)
        except (AccountUnusable, RequestNotSent) as exc:  # nothing was sent: nothing learnt of the channel
            breaker.release(channel_id)
            code = "channel_account_unusable" if account_id is not None else "channel_error"
            _close_attempt(session, attempt, FAILED, code, fault_text(exc))  # not an outcome of the channel
            session.commit()
            if account_id is not None:
                unusable = fault_text(exc)
            log.warning("channel %s: request for %s not sent (%s); trying the next candidate", channel_id, op.id, code)
            continue
        except CredentialsRefused as exc:
            if account_id is None:  # the platform's own credentials: the channel is unusable for every merchant
                took = _ms(started)
                breaker.record(channel_id, ok=False)
                _close_attempt(session, attempt, FAILED, "channel_error", fault_text(exc), duration_ms=took, op=op)
                session.commit()
                log.warning("channel %s refused the platform's credentials for %s; trying the next candidate",
                            channel_id, op.id)
                continue
            # the merchant's credentials: the PSP answered, and the answer is a decline of that account
            result = ChannelResult(FAILED, None, "channel_credentials_refused", fault_text(exc))
        except ChannelUnavailable as exc:
            took = _ms(started)
            breaker.record(channel_id, ok=False)
            _close_attempt(session, attempt, FAILED, "channel_error", fault_text(exc), duration_ms=took, op=op)
            session.commit()
            log.warning("channel %s unavailable for %s; trying the next candidate", channel_id, op.id)
            continue
        except OperationNotSupported as exc:  # refused before anything was sent
            breaker.release(channel_id)
            _close_attempt(session, attempt, FAILED, "operation_not_supported", fault_text(exc))
            session.commit()
            continue
        except ChannelError as exc:  # a timeout, an answer the adapter got wrong, any other fault: unknown
            took = _ms(started)
            breaker.record(channel_id, ok=False)
            code = ("timeout" if isinstance(exc, ChannelTimeout) else
                    AdapterFault.code if isinstance(exc, AdapterFault) else "channel_error")
            reference = exc.channel_reference if isinstance(exc, AdapterFault) else None
            _close_attempt(session, attempt, "unknown", code, fault_text(exc), reference, duration_ms=took)
            if reference is not None:  # the channel has it: a status query asks by it
                op.channel_reference = reference
            session.commit()
            log.warning("channel %s: %s for %s, outcome unknown, left processing", channel_id, code, op.id)
            return _as_it_is_now(session, op)
        took = _ms(started)
        if says_nothing_of_the_channel(result.status, result.error_code):  # the merchant's key refused
            breaker.release(channel_id)
        else:  # an answer, a decline included: the channel is up
            breaker.record(channel_id, ok=True)
        raw = dict(result.raw or {})
        if result.status == PROCESSING:  # what the channel said; a callback may already have settled it
            _record_answer(session, attempt, result.channel_reference, raw, took)
            op.channel_reference = result.channel_reference
            session.commit()
            return _as_it_is_now(session, op)
        answered = None  # the attempt and the outcome its answer closes it with, if it does
        if (closed := attempt_status(result.status)) is None:  # the customer's step: still open
            _record_answer(session, attempt, result.channel_reference, raw, took)
        else:
            answered = (attempt, (closed, result.error_code, result.error_message, result.channel_reference, raw,
                                  took))
        if (result.status == FAILED and result.error_code in retry_on and retries_left > 0
                and index + 1 < len(candidates)):
            _close_attempt(session, attempt, *answered[1], op=op)
            retries_left -= 1
            declined = result
            session.commit()  # the declined attempt is on record before the next channel hears of it
            log.info("channel %s declined %s with %s, a soft decline: trying the next candidate",
                     channel_id, op.id, result.error_code)
            continue
        # the attempt closed with the answer and the operation settled by it: one statement on PostgreSQL
        settle(session, op, result.status, result.error_code, result.error_message, attempts=attempts,
               channel_reference=result.channel_reference, changes=waiting_changes(result), answered=answered)
        return Made(op, attempts)  # the caller commits the outcome with its stored response
    if write is not None:  # no candidate was called: on record as decided, then failed as below
        write()
    if op.status == PENDING and not transition(session, op, PROCESSING, routing=op.routing):
        return Made(op, attempts)
    if declined is not None:  # no later candidate took it: the issuer's answer is the outcome
        settle(session, op, FAILED, declined.error_code, declined.error_message, attempts=attempts)
    elif unusable is not None:  # the merchant's own account could not be used, and no other channel took it
        settle(session, op, FAILED, "channel_account_unusable", unusable, attempts=attempts)
    else:
        settle(session, op, FAILED, "channel_error", "no candidate channel could be reached", attempts=attempts)
    return Made(op, attempts)


def _ms(started: float) -> int:
    """Milliseconds since ``started`` (perf_counter): the channel's answer time, kept on the attempt."""
    return round((time.perf_counter() - started) * 1000)


def _as_it_is_now(session: Session, op: Operation) -> Made:
    """After an answer that leaves the operation processing: re-read it, so the response shows a
    callback or status query that settled it meanwhile. Its first status query was set when the
    channel was chosen (``_use_channel``); a settled operation has none."""
    session.refresh(op)
    return Made(op, attempts_of(session, op))


def _use_channel(session: Session, op: Operation, channel_id: str, account_id: str | None = None,
                 write: Callable[[], None] | None = None) -> bool:
    """Point the operation at the channel about to be called (and the merchant's channel account
    it is called with); a new operation moves pending → processing in the same statement, or, not
    written yet (``write``), is inserted so (the row that move leaves, version 1). If this process
    dies during the call, a status query follows."""
    changes = {"channel": channel_id, "routing": {**op.routing, "channel": channel_id},
               "next_query_at": next_query_at(0), "channel_account_id": account_id}
    if write is not None:
        for name, value in {"status": PROCESSING, "version": op.version + 1, **changes}.items():
            setattr(op, name, value)
        write()
        return True
    if op.status == PENDING:
        return transition(session, op, PROCESSING, **changes)
    for name, value in changes.items():
        setattr(op, name, value)
    return True


_ATTEMPTS = Attempt.__table__
_ATTEMPT_INSERT = insert(_ATTEMPTS)
_ATTEMPT_UPDATE = update(_ATTEMPTS).where(_ATTEMPTS.c.id == bindparam("attempt_id"))


def _write_attempt(session: Session, op: Operation, seq: int, channel_id: str,
                   account_id: str | None = None) -> Attempt:
    """A new attempt row (Core: it is written on every payment); the object stays outside the
    session, and _close_attempt keeps row and object in step."""
    now = utcnow()
    attempt = Attempt(id=new_id("att"), operation_id=op.id, seq=seq, channel=channel_id, status=PROCESSING,
                      channel_account_id=account_id, request_id=context.current_request_id(), created_at=now,
                      updated_at=now)
    session.connection().execute(_ATTEMPT_INSERT, {
        "id": attempt.id, "operation_id": op.id, "seq": seq, "channel": channel_id, "status": PROCESSING,
        "channel_account_id": account_id, "request_id": attempt.request_id, "created_at": now, "updated_at": now})
    return attempt


# An attempt still waiting for its outcome is processing, unknown or (an authorization) requires_capture
# (literals, not IN: an IN list is rendered again on every execution, and this runs on every payment).
_ATTEMPT_CLOSE = update(_ATTEMPTS).where(_ATTEMPTS.c.id == bindparam("attempt_id"),
                                         or_(_ATTEMPTS.c.status == literal(PROCESSING),
                                             _ATTEMPTS.c.status == literal("unknown"),
                                             _ATTEMPTS.c.status == literal(REQUIRES_CAPTURE)))
_ATTEMPT_READ = select(_ATTEMPTS).where(_ATTEMPTS.c.id == bindparam("attempt_id"))


def _outcome_values(status: str, code: str | None, message: str | None, channel_reference: str | None = None,
                    raw: dict | None = None, duration_ms: int | None = None) -> dict:
    """The columns an attempt's outcome sets (``duration_ms``: the channel's answer time, when it
    answered the call; a callback or status query that settles the attempt later keeps it)."""
    values = {"status": status, "error_code": code, "error_message": message, "updated_at": utcnow()}
    if channel_reference is not None:
        values["channel_reference"] = channel_reference
    if raw is not None:
        values["raw"] = raw
    if duration_ms is not None:
        values["duration_ms"] = duration_ms
    return values


def _close_attempt(session: Session, attempt: Attempt, status: str, code: str | None, message: str | None,
                   channel_reference: str | None = None, raw: dict | None = None,
                   duration_ms: int | None = None, *, op: Operation | None = None) -> None:
    """``_close_attempts`` of one attempt. One conditional UPDATE tells exactly whether a callback
    or status query closed it meanwhile, and then it keeps that outcome: the object shows the row.
    ``op``: the attempt's operation, whose outcome then counts for success rates if this call closed it."""
    values = _outcome_values(status, code, message, channel_reference, raw, duration_ms)
    closed = execute_all_matched(session.connection(), _ATTEMPT_CLOSE, [{"attempt_id": attempt.id, **values}])
    _closed_or_read(session, attempt, values, closed, op)


def _closed_or_read(session: Session, attempt: Attempt, values: dict, closed: bool, op: Operation | None) -> None:
    """After an attempt's conditional close: the object shows the values it closed it with (and
    ``op``'s outcome counts for success rates), or, closed meanwhile by a callback or status
    query, the row as that left it."""
    if closed:
        for name, value in values.items():
            set_committed_value(attempt, name, value)
        if op is not None:
            _count_outcome(session, op, attempt.channel, values["status"], values["error_code"])
    else:
        row = dict(session.connection().execute(_ATTEMPT_READ, {"attempt_id": attempt.id}).mappings().one())
        for name, value in row.items():
            set_committed_value(attempt, name, value)


_attempt_closes: dict[tuple[str, ...], object] = {}


def _attempt_close(names: tuple[str, ...]):
    """``_ATTEMPT_CLOSE`` setting ``names`` from parameters ``attempt_<name>`` (a statement that can be
    a CTE beside the transition's compare-and-set), built once per set of columns."""
    statement = _attempt_closes.get(names)
    if statement is None:
        statement = _attempt_closes[names] = _ATTEMPT_CLOSE.values(
            {name: bindparam(f"attempt_{name}", type_=_ATTEMPTS.c[name].type) for name in names})
    return statement


def _count_outcome(session: Session, op: Operation, channel_id: str, status: str, code: str | None) -> None:
    """An attempt's final outcome, for the success_rate strategy: a decline and a channel fault are
    failures; a failure that says nothing of the channel (app.domain.channel_outcomes: nothing sent,
    a merchant's own credentials refused) is not an outcome of it, as it is nothing to its circuit."""
    if status in (SUCCEEDED, FAILED) and not says_nothing_of_the_channel(status, code):
        method = success_rates.method_of(op.kind, op.payment_method)
        success_rates.record_on_commit(session, channel_id, op.kind, method, op.currency, status == SUCCEEDED)


def _close_attempts(session: Session, closes: list[tuple[Attempt, tuple]]) -> bool:
    """Record outcomes ``(attempt, _outcome_values arguments)`` on attempts still open (processing
    or unknown), each one conditional UPDATE, sent as executemanys; True if every attempt was still
    open and is closed now (the objects, loaded in the session or not, then show the row's values
    without being flushed again), False if any was closed meanwhile (which one is not known)."""
    planned = [(attempt, _outcome_values(*outcome)) for attempt, outcome in closes]
    if not execute_all_matched(session.connection(), _ATTEMPT_CLOSE,
                               [{"attempt_id": attempt.id, **values} for attempt, values in planned]):
        return False
    for attempt, values in planned:
        for name, value in values.items():
            set_committed_value(attempt, name, value)
    return True


def _record_answer(session: Session, attempt: Attempt, channel_reference: str | None, raw: dict,
                   duration_ms: int) -> None:
    """A channel's 'processing' answer: its reference, raw answer and answer time, never the attempt's status."""
    values = {"channel_reference": channel_reference, "raw": raw, "duration_ms": duration_ms, "updated_at": utcnow()}
    session.connection().execute(_ATTEMPT_UPDATE, {"attempt_id": attempt.id, **values})
    for name, value in values.items():
        set_committed_value(attempt, name, value)


def _note_drop(op: Operation, channel_id: str, reason: str) -> None:
    dropped = list(op.routing.get("dropped") or []) + [{"channel": channel_id, "reason": reason}]
    op.routing = {**op.routing, "dropped": dropped}


def attempt_status(status: str) -> str | None:
    """What an attempt records when its channel answers ``status`` about a payment: an authorization
    stays open until captured or voided (reconciliation looks only at closed attempts, which the
    channel's statement lists); a customer's step leaves the attempt as it is (None)."""
    return None if status == REQUIRES_ACTION else status


def waiting_changes(result) -> dict:
    """The columns a channel's answer sets on a payment that waits: where the customer goes
    (requires_action), and until when an authorization holds, its status query due then."""
    if result.status == REQUIRES_ACTION and result.next_action:
        return {"next_action": dict(result.next_action)}
    if result.status == REQUIRES_CAPTURE and result.capture_before is not None:
        before = result.capture_before.astimezone(timezone.utc).replace(tzinfo=None)
        return {"capture_before": before, "next_query_at": before + timedelta(seconds=1)}
    return {}


def _settle_changes(op: Operation, status: str, code: str | None, message: str | None,
                    channel_reference: str | None, extra: dict | None = None) -> dict:
    # A final operation is never under review; a fee is charged only on success (contract §1). A
    # payment that waits (for its customer, or its capture) is still asked at its channel.
    changes = {"next_query_at": next_query_at(0) if status in (REQUIRES_ACTION, REQUIRES_CAPTURE) else None,
               "review": False}
    if status == FAILED:
        changes.update(failure_code=code or "channel_error", failure_message=message or code or "failed", fee=0)
    if status == CANCELED:
        changes["fee"] = 0
    if status != REQUIRES_ACTION and op.next_action:
        changes["next_action"] = None
    if channel_reference and not op.channel_reference:
        changes["channel_reference"] = channel_reference
    changes.update(extra or {})
    return changes


def _settled_attempt(op: Operation, attempts: list[Attempt] | None, status: str, code: str | None,
                     message: str | None, channel_reference: str | None) -> tuple[Attempt, tuple] | None:
    """The operation's attempt on its channel still waiting for an outcome, if any, and the outcome
    a settlement records on it (``_close_attempt``'s arguments after the attempt)."""
    attempt = next((a for a in reversed(attempts or []) if a.channel == op.channel), None)
    closed = attempt_status(status)
    if attempt is None or attempt.status in FINAL or closed is None or closed == attempt.status:
        return None
    return attempt, (closed, code, message if status == FAILED else None,
                     attempt.channel_reference or channel_reference)


@dataclass(frozen=True)
class Settlement:
    """One outcome to settle: as the arguments of ``settle``, and the request id its postings and
    event are written under (None: the current context's)."""

    op: Operation
    status: str
    code: str | None = None
    message: str | None = None
    attempts: list[Attempt] | None = None
    channel_reference: str | None = None
    request_id: str | None = None
    changes: dict | None = None  # other columns the move sets (waiting_changes, a capture's amount and fee)
    # The attempt whose channel answered with this outcome, and what the answer closes it with
    # (``_close_attempt``'s arguments after the attempt): closed whether or not the transition wins,
    # before it, as a separate ``_close_attempt`` would (in the transition's statement: ``transition_beside``).
    answered: tuple[Attempt, tuple] | None = None


class SettlementRace(Exception):
    """A batch of settlements met a concurrent change (see ``settle_all``); nothing of it may be kept."""


def settle(session: Session, op: Operation, status: str, code: str | None = None, message: str | None = None,
           *, attempts: list[Attempt] | None = None, channel_reference: str | None = None,
           changes: dict | None = None, answered: tuple[Attempt, tuple] | None = None) -> bool:
    """Move a processing operation to its final status, with its postings and event, once:
    ``_settle`` of one, where a race is known exactly. False (and nothing written) if the operation
    changed meanwhile; an attempt that a callback or status query closed meanwhile keeps its outcome.

    ``attempts`` (the operation's, already loaded) marks the open attempt on the operation's
    channel with the outcome; that happens only if this call won the transition."""
    return settle_one(session, Settlement(op, status, code, message, attempts, channel_reference, changes=changes,
                                          answered=answered))


def settle_one(session: Session, settlement: Settlement) -> bool:
    """``settle`` of a Settlement."""
    return _settle(session, [settlement], exact=True)


def settle_all(session: Session, settlements: list[Settlement]) -> None:
    """``settle`` for several operations at once (the callback drain): ``_settle`` with their
    transitions as one compare-and-set executemany and the closing of their open attempts as
    another, so a batch costs two round trips where one by one it costs two per operation. Raises
    SettlementRace if any transition or attempt close did not apply (a concurrent change): what was
    written since the caller's savepoint must then be rolled back, and the batch applied one by
    one with ``settle``."""
    _settle(session, settlements, exact=False)


def _settle(session: Session, settlements: list[Settlement], *, exact: bool) -> bool:
    """The one way operations are settled: each one's transition (a compare-and-set), then, only
    if it won, its open attempt on the operation's channel closed with the outcome, then what the
    settlement writes (postings and event per operation, under its request id). ``exact``: a single
    settlement, whose races are known one by one (``transition``, ``_close_attempt``); otherwise
    the executemanys tell only that something raced, and SettlementRace is raised."""
    moves = [(s.op, s.status, _settle_changes(s.op, s.status, s.code, s.message, s.channel_reference, s.changes))
             for s in settlements]
    owned = [(s.op, closing) for s in settlements if s.answered is None
             and (closing := _settled_attempt(s.op, s.attempts, s.status, s.code, s.message, s.channel_reference))]
    closes = [closing for _op, closing in owned]
    reviewed = {s.op.id for s in settlements if s.op.review}
    if exact:
        ((op, target, changes),) = moves
        if settlements[0].answered is not None:
            attempt, outcome = settlements[0].answered
            values = _outcome_values(*outcome)
            won, closed = transition_beside(session, op, target, _attempt_close(tuple(values)),
                                            {"attempt_id": attempt.id,
                                             **{f"attempt_{name}": value for name, value in values.items()}},
                                            **changes)
            _closed_or_read(session, attempt, values, closed, op)
            if not won:
                return False
        elif not transition(session, op, target, **changes):
            return False
        for attempt, outcome in closes:
            _close_attempt(session, attempt, *outcome, op=op)
    elif not transition_all(session, moves):
        raise SettlementRace("an operation of the batch changed meanwhile")
    elif not _close_attempts(session, closes):
        raise SettlementRace("an attempt of the batch was closed meanwhile")
    else:
        for op_, (attempt, (status, code, *_rest)) in owned:
            _count_outcome(session, op_, attempt.channel, status, code)
    for s in settlements:
        with context.bound(s.request_id, s.op.merchant_id, s.op.id) if s.request_id else contextlib.nullcontext():
            _record_settlement(session, s.op, s.status, s.attempts, s.op.id in reviewed)
    return True


def _record_settlement(session: Session, op: Operation, status: str, attempts: list[Attempt] | None,
                       reviewed: bool = False) -> None:
    """What a won transition to a final status writes: postings, event, a failed refund's amount
    given back to its payment, a failed operation's limits given back; for an operation that was
    under review (``reviewed``), its reconciliation issue closed."""
    if reviewed:
        issues.settled_under_review(session, op, status)
    if status in FINAL:
        metrics.settled_on_commit(session, op.kind, status, op.channel)
    entries = _postings(session, op, status)
    data = representation.operation(op, attempts) if attempts is not None else view(session, op)
    # What follows needs no answer, unless a customer's balance moves (its row is read back); in a
    # batch (app.adapters.writebehind) it is only collected, and the batch writes it at its end.
    pipeline = writebehind.current(session) is None and all(
        leg.account.kind == "system" for _kind, legs in entries for leg in legs)
    with pipelined(session) if pipeline else contextlib.nullcontext():
        for kind, legs in entries:
            ledger.post(session, merchant_id=op.merchant_id, kind=kind, source_id=op.id, legs=legs)
        if status == FAILED and op.kind == "refund":
            session.execute(update(Operation).where(Operation.id == op.payment_id)
                            .values(amount_refunded=Operation.amount_refunded - op.amount)
                            .execution_options(synchronize_session=False))
        events.record(session, merchant_id=op.merchant_id, livemode=op.livemode, type=f"{op.kind}.{status}",
                      object_id=op.id, data=data)
    if op.order_id:  # outside the pipeline: it reads the order and counts what its compare-and-set matched
        orders.settled(session, op, status)
    if status in (FAILED, CANCELED) and op.limit_reservation:
        release_limits(op.limit_reservation)


def release_limits(reservation: dict) -> None:
    """Give a velocity-limit reservation back (idempotent; never fails a settlement on Redis)."""
    from app.adapters.redis_conn import get_redis
    from rules import limits

    try:
        limits.release(get_redis(), limits.Reservation.from_dict(reservation))
    except Exception:  # noqa: BLE001 - counters expire by themselves; never fail a settlement on Redis
        log.warning("could not give back velocity-limit reservation %s", reservation, exc_info=True)


def _postings(session: Session, op: Operation, status: str) -> list[tuple[str, list[ledger.Leg]]]:
    """The settlement's entries (``app.domain.postings``) on the operation's accounts. An operation
    with no channel ran inside the ledger: a balance payment, or the refund of one (a refund takes
    its payment's channel)."""
    if op.kind == "payment" and status == SUCCEEDED and op.amount_captured is not None:
        entries = postings.captured(op.amount_captured, op.fee)  # a capture: what it took, its fee
    else:
        entries = postings.settlement(op.kind, status, op.amount, op.fee, in_ledger=not op.channel)
    return entries_on(session, op, entries)


def entries_on(session: Session, op: Operation, entries: list[postings.Entry]) -> list[tuple[str, list[ledger.Leg]]]:
    """Posting rules' entries on the accounts of ``op`` (its customer's, its channel's clearing, the
    merchant's settlement and fee revenue), as (kind, legs) for ``ledger.post``."""
    accounts: dict[Role, Account | ledger.SystemAccount] = {}

    def account(role: Role) -> Account | ledger.SystemAccount:
        if role not in accounts:
            accounts[role] = _account(session, op, role)
        return accounts[role]

    return [(entry.kind, ledger.legs_of(entry, account)) for entry in entries]


_SYSTEM_CODES = {Role.SETTLEMENT: ledger.MERCHANT_SETTLEMENT, Role.FEE_REVENUE: ledger.FEE_REVENUE}


def _account(session: Session, op: Operation, role: Role) -> Account | ledger.SystemAccount:
    """The account that plays ``role`` in a settlement of ``op``: its customer's (a refund's is the
    one its payment was paid from), or one of the merchant's system accounts in its currency."""
    if role is Role.CUSTOMER:
        owner = session.get(Operation, op.payment_id) if op.kind == "refund" else op
        return session.get(Account, owner.account_id)
    code = f"{ledger.CHANNEL_CLEARING}:{op.channel}" if role is Role.CLEARING else _SYSTEM_CODES[role]
    return ledger.system_account(session, op.merchant_id, code, op.currency, livemode=op.livemode)
