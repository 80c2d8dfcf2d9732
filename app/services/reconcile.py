"""Batch reconciliation: our attempts against a channel's statement for one day.

Every statement line is matched to our attempt on that channel by the channel's reference.
Issues found:

- ``missing_in_payrouter``: the channel settled an operation we have no record of;
- ``pending_in_payrouter``: we still wait for its outcome (a lost callback, or a timeout whose
  attempt never learned the channel's reference: those are found by asking the channel by our
  reference): a status query is queued at once, which settles it — compensation, not a report;
- ``status_mismatch`` / ``amount_mismatch``: both sides have it, and they disagree;
- ``missing_at_channel``: we recorded a final outcome that day that the statement lacks.

Each run is stored (``reconciliation_runs``) with its issues, for ops to follow up.
"""
from __future__ import annotations

import datetime as dt
import logging

import redis
from sqlalchemy import select

from app import context, jobs
from app.channels_runtime import channel
from app.db import unit_of_work
from app.domain.errors import InvalidRequest
from app.domain.states import FINAL, PROCESSING
from app.models import Attempt, Operation, ReconciliationRun, new_id
from channels.base import ChannelError

log = logging.getLogger("payrouter.reconcile")


def reconcile(channel_id: str, day: dt.date) -> ReconciliationRun:
    try:
        adapter = channel(channel_id)
    except KeyError:
        raise InvalidRequest(f"no such channel {channel_id}", param="channel") from None
    lines = {line.channel_reference: line for line in adapter.statement(day)}
    start = dt.datetime.combine(day, dt.time())
    with unit_of_work() as session:
        by_ref = _attempts_by_reference(session, channel_id, list(lines))
        by_ref.update(_unanswered(session, adapter, channel_id, set(lines) - set(by_ref)))
        ours_that_day = session.execute(
            select(Attempt, Operation).join(Operation, Operation.id == Attempt.operation_id)
            .where(Attempt.channel == channel_id, Attempt.status.in_(FINAL), Attempt.channel_reference.is_not(None),
                   Attempt.updated_at >= start, Attempt.updated_at < start + dt.timedelta(days=1))).all()
        issues, matched, to_query = [], 0, []
        for ref, line in lines.items():
            found = by_ref.get(ref)
            if found is None:
                issues.append(_issue("missing_in_payrouter", ref, theirs=line))
                continue
            attempt, op = found
            if attempt.status not in FINAL or op.status not in FINAL:
                issues.append(_issue("pending_in_payrouter", ref, op, line))
                to_query.append(op.id)
            elif attempt.status != line.status:
                issues.append(_issue("status_mismatch", ref, op, line))
            elif (op.amount, op.currency) != (line.amount, line.currency):
                issues.append(_issue("amount_mismatch", ref, op, line))
            else:
                matched += 1
        for attempt, op in ours_that_day:
            if attempt.channel_reference not in lines:
                issues.append(_issue("missing_at_channel", attempt.channel_reference, op))
        run = ReconciliationRun(id=new_id("recon"), channel=channel_id, day=day.isoformat(), statement_lines=len(lines),
                                matched=matched, issues=issues, channel_fees=sum(line.fee for line in lines.values()),
                                request_id=context.current_request_id())
        session.add(run)
    for op_id in to_query:
        try:
            jobs.enqueue(jobs.CORE, "app.services.callbacks.query_status", op_id, job_id=f"query-{op_id}")
        except redis.RedisError:
            log.warning("status query for %s not queued (Redis unreachable); the sweep will do it", op_id)
    log.info("reconciled %s for %s: %s matched, %s issues", channel_id, day, matched, len(issues))
    return run


def _attempts_by_reference(session, channel_id: str, references: list[str]) -> dict:
    found = {}
    for start in range(0, len(references), 500):
        chunk = references[start:start + 500]
        for attempt, op in session.execute(
                select(Attempt, Operation).join(Operation, Operation.id == Attempt.operation_id)
                .where(Attempt.channel == channel_id, Attempt.channel_reference.in_(chunk))):
            found[attempt.channel_reference] = (attempt, op)
    return found


def _unanswered(session, adapter, channel_id: str, unmatched: set[str], limit: int = 200) -> dict:
    """Attempts that never learned the channel's reference (a timeout): ask the channel by our
    reference, and match them to statement lines that way."""
    if not unmatched:
        return {}
    found = {}
    rows = session.execute(
        select(Attempt, Operation).join(Operation, Operation.id == Attempt.operation_id)
        .where(Attempt.channel == channel_id, Attempt.channel_reference.is_(None), Operation.status == PROCESSING)
        .limit(limit)).all()
    for attempt, op in rows:
        try:
            answer = adapter.query(op.id)
        except ChannelError:
            continue
        if answer.channel_reference in unmatched:
            found[answer.channel_reference] = (attempt, op)
    return found


def _issue(kind: str, reference: str, op: Operation | None = None, theirs=None) -> dict:
    issue = {"issue": kind, "channel_reference": reference}
    if op is not None:
        issue["ours"] = {"id": op.id, "status": op.status, "amount": op.amount, "currency": op.currency}
    if theirs is not None:
        issue["theirs"] = {"operation": theirs.operation, "status": theirs.status, "amount": theirs.amount,
                           "currency": theirs.currency}
    return issue


def summary(run: ReconciliationRun) -> dict:
    return {"id": run.id, "channel": run.channel, "date": run.day, "statement_lines": run.statement_lines,
            "matched": run.matched, "channel_fees": run.channel_fees, "issues": run.issues}
