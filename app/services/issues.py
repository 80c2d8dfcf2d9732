"""Reconciliation issues: each discrepancy between us and a channel, open until it is resolved.

One row per channel, kind and channel reference (``uq_reconciliation_issues_key``): a later run
that finds the same discrepancy (the daily run over a day the near-real-time passes already
compared) points at the same issue instead of opening another, and an issue resolved once is not
reopened by finding it again: a discrepancy found again is the same fact. The exception is a failure
that recurs (``RECURRING``: ``statement_unavailable``): each time the statement cannot be read is a
new failure, so it (re)opens its issue, resolved or not, with its newest error (``record``).
Resolved by:

- an operator, with a note (``payrouter reconcile resolve ISSUE --note``): who, when, note,
  audited; resolving twice, or an unknown issue, is refused; ``--settle succeeded|failed`` also
  settles the operation the issue is about when it is still processing (the channel forgot it);
- the channel, for what it was waiting on: an ``unknown_at_channel`` issue when a callback or
  status query settles the operation under review, a ``pending_in_payrouter`` issue when the
  operation settles the way the statement said, a ``missing_at_channel`` issue when a later run
  finds the operation on the statement (a statement that came late), a ``statement_unavailable``
  issue (reference ``<mca_…>:<day>``) when a later run reads that account's statement of that day;
  a ``channel_not_reconciled`` issue when the channel runs again (imported again) and its runs have
  compared every account's statement over what was not reconciled (not by the import itself).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from app import context
from app.adapters.db import insert_unique_rows, read_only, unit_of_work
from app.adapters.models import Operation, ReconciliationIssue, new_id, utcnow
from app.adapters.models import reconciliation_run_issues as RUN_ISSUES
from app.domain.errors import Conflict, InvalidRequest, NotFound
from app.domain.states import FAILED, PROCESSING, SUCCEEDED
from app.services import audit

log = logging.getLogger("payrouter.reconcile")
OPEN, RESOLVED = "open", "resolved"
UNKNOWN_AT_CHANNEL = "unknown_at_channel"
PENDING_IN_PAYROUTER = "pending_in_payrouter"
DUPLICATE_IN_STATEMENT = "duplicate_in_statement"
MISSING_AT_CHANNEL = "missing_at_channel"
STATEMENT_UNAVAILABLE = "statement_unavailable"  # a merchant channel account's statement could not be read
# A channel this process cannot build (pruned from the definitions, or stored but not buildable here)
# with outcomes its reconciliation never compared (or none ever: pruned before its first run), one
# open per channel: app.services.reconcile.unreconciled_channels.
CHANNEL_NOT_RECONCILED = "channel_not_reconciled"
# Kinds that are failures, not discrepancies: found again, the issue is open again with what was found now.
RECURRING = frozenset({STATEMENT_UNAVAILABLE})
# Every class a run can find (app.services.reconcile): the filters offer these and refuse others.
KINDS = ("missing_in_payrouter", MISSING_AT_CHANNEL, PENDING_IN_PAYROUTER, "status_mismatch", "amount_mismatch",
         "fee_mismatch", DUPLICATE_IN_STATEMENT, UNKNOWN_AT_CHANNEL, STATEMENT_UNAVAILABLE, CHANNEL_NOT_RECONCILED)
_TABLE = ReconciliationIssue.__table__


def record(session: Session, channel_id: str, found: list[dict], run_id: str | None = None) -> None:
    """Store the issues a run (or a status query) found, as ``_issue`` dicts, in bulk: one
    ``INSERT … ON CONFLICT DO NOTHING … RETURNING`` executemany, then the rows of those it left
    out read back by key (an issue found before, or one another pass recorded meanwhile, is that
    row). Each dict gains the issue's ``id`` and ``status`` (``resolved`` if it was found and
    resolved before). A ``RECURRING`` issue found again is (re)opened instead (``_recurred``)."""
    new, now, request_id = {}, utcnow(), context.current_request_id()
    for issue in found:
        key = (issue["issue"], issue["channel_reference"])
        if key not in new:
            new[key] = {"id": new_id("ri"), "run_id": run_id, "channel": channel_id, "kind": key[0],
                        "channel_reference": key[1], "operation_id": (issue.get("ours") or {}).get("id"),
                        "ours": issue.get("ours"), "theirs": issue.get("theirs"), "status": OPEN,
                        "request_id": request_id, "created_at": now}
    known = {}
    if new:
        inserted = insert_unique_rows(session, _TABLE, list(new.values()),
                                      returning=(_TABLE.c.kind, _TABLE.c.channel_reference))
        known = {key: (new[key]["id"], OPEN) for key in map(tuple, inserted)}
        recurred = [new[key] for key in new if key not in known and key[0] in RECURRING]
        left_out = [{"issue": kind, "channel_reference": ref} for kind, ref in new
                    if (kind, ref) not in known and kind not in RECURRING]
        if left_out:
            known.update(_known(session, channel_id, left_out))
        if recurred:
            known.update(_recurred(session, channel_id, recurred))
    for issue in found:
        issue["id"], issue["status"] = known[(issue["issue"], issue["channel_reference"])]
    if run_id is not None and found:  # this run found them, whichever run found them first
        insert_unique_rows(session, RUN_ISSUES, [{"run_id": run_id, "issue_id": issue_id}
                                                 for issue_id in sorted({issue["id"] for issue in found})])


def _recurred(session: Session, channel_id: str, rows: list[dict]) -> dict[tuple[str, str], tuple[str, str]]:
    """A ``RECURRING`` failure happened again: its stored issue (locked) is open, with ``ours`` and
    ``theirs`` of this time; one resolved before keeps who resolved it, when and why in
    ``theirs.previously_resolved``. A ``daily`` failure stays ``daily`` while it is open (only a
    run that reads that whole day may close it: app.services.reconcile.statement_unavailable)."""
    known = {}
    for row in rows:
        stored = session.execute(select(ReconciliationIssue).where(
            ReconciliationIssue.channel == channel_id, ReconciliationIssue.kind == row["kind"],
            ReconciliationIssue.channel_reference == row["channel_reference"]).with_for_update()).scalar_one()
        ours, theirs = dict(row["ours"] or {}), dict(row["theirs"] or {})
        if stored.status == OPEN and (stored.ours or {}).get("mode") == "daily" and "mode" in ours:
            ours["mode"] = "daily"
        if stored.status != OPEN:
            theirs["previously_resolved"] = {"by": stored.resolved_by, "note": stored.resolution_note,
                                             "at": stored.resolved_at.isoformat() if stored.resolved_at else None}
            log.warning("reconciliation issue %s (%s %s) happened again: open again", stored.id, stored.kind,
                        stored.channel_reference)
        stored.status, stored.ours, stored.theirs = OPEN, ours, theirs
        stored.resolved_by = stored.resolved_at = stored.resolution_note = None
        known[(stored.kind, stored.channel_reference)] = (stored.id, OPEN)
    session.flush()
    return known


def _known(session: Session, channel_id: str, found: list[dict]) -> dict[tuple[str, str], tuple[str, str]]:
    """(kind, reference) → (id, status) of the stored issues among ``found``."""
    known = {}
    kinds = sorted({issue["issue"] for issue in found})  # with the references: the unique key's index
    references = sorted({issue["channel_reference"] for issue in found})
    for start in range(0, len(references), 500):
        for row in session.execute(select(_TABLE.c.id, _TABLE.c.kind, _TABLE.c.channel_reference, _TABLE.c.status)
                                   .where(_TABLE.c.channel == channel_id, _TABLE.c.kind.in_(kinds),
                                          _TABLE.c.channel_reference.in_(references[start:start + 500]))):
            known[(row.kind, row.channel_reference)] = (row.id, row.status)
    return known


def statuses(issue_ids: list[str]) -> dict[str, str]:
    """The current status of each issue id given (runs keep the ids of what they found)."""
    found = {}
    with read_only() as session:  # in pieces: PostgreSQL takes at most 65,535 parameters in one statement
        for start in range(0, len(issue_ids), 500):
            found.update(session.execute(select(_TABLE.c.id, _TABLE.c.status)
                                         .where(_TABLE.c.id.in_(issue_ids[start:start + 500]))).all())
    return found


def _of_run(run_id: str):
    """The issues ``run_id`` found (first or again): a join on ``reconciliation_run_issues``."""
    return _TABLE.join(RUN_ISSUES, and_(RUN_ISSUES.c.issue_id == _TABLE.c.id, RUN_ISSUES.c.run_id == run_id))


def open_of_run(run_id: str, besides: list[str]) -> int:
    """How many issues ``run_id`` found are still open, ``besides`` those ids (counted apart)."""
    with read_only() as session:
        total = session.scalar(select(func.count()).select_from(_of_run(run_id)).where(_TABLE.c.status == OPEN))
        for start in range(0, len(besides), 500):
            total -= session.scalar(select(func.count()).select_from(_of_run(run_id)).where(
                _TABLE.c.status == OPEN, _TABLE.c.id.in_(besides[start:start + 500])))
    return total


def pages_of_run(run_id: str, channel_id: str, size: int = 1000) -> Iterator[list[dict]]:
    """The issues ``run_id`` (of ``channel_id``) found, first or again, as a run lists them
    (``issue``, ``channel_reference``, ``ours``, ``theirs``, ``id``, ``status``), by class and
    reference, ``size`` at a time: one query streamed (a server-side cursor on PostgreSQL), in one
    read-only session."""
    query = (select(_TABLE.c.id, _TABLE.c.kind, _TABLE.c.channel_reference, _TABLE.c.ours, _TABLE.c.theirs,
                    _TABLE.c.status).select_from(_of_run(run_id))
             .where(_TABLE.c.channel == channel_id)
             .order_by(_TABLE.c.kind, _TABLE.c.channel_reference).execution_options(yield_per=size))
    with read_only() as session:
        for rows in session.execute(query).partitions():
            yield [{"id": row.id, "issue": row.kind, "channel_reference": row.channel_reference, "ours": row.ours,
                    "theirs": row.theirs, "status": row.status} for row in rows]


def view(issue: ReconciliationIssue) -> dict:
    from app.services.representation import rfc3339

    return {"id": issue.id, "object": "reconciliation_issue", "issue": issue.kind, "channel": issue.channel,
            "channel_reference": issue.channel_reference, "operation": issue.operation_id, "ours": issue.ours,
            "theirs": issue.theirs, "status": issue.status, "run": issue.run_id,
            "created_at": rfc3339(issue.created_at), "resolved_by": issue.resolved_by,
            "resolved_at": rfc3339(issue.resolved_at), "note": issue.resolution_note}


def listing(channel_id: str | None = None, status: str | None = OPEN, limit: int = 100,
            kind: str | None = None) -> list[dict]:
    """Issues, newest first: the open ones by default; ``kind``: of one class only."""
    with read_only() as session:
        query = select(ReconciliationIssue).order_by(ReconciliationIssue.created_at.desc(), ReconciliationIssue.id)
        if channel_id:
            query = query.where(ReconciliationIssue.channel == channel_id)
        if kind:
            query = query.where(ReconciliationIssue.kind == kind)
        if status:
            query = query.where(ReconciliationIssue.status == status)
        return [view(issue) for issue in session.scalars(query.limit(limit))]


def resolve(issue_id: str, note: str, actor: str, settle: str | None = None) -> dict:
    """An operator's resolution: who, when and why, audited. Refused for an unknown issue or one
    already resolved (the first resolution stands). ``settle`` (succeeded or failed): the operator
    also settles the issue's operation, still processing (one the channel forgot, or still
    pending), in the same transaction, with its postings and event as a channel's word would."""
    if settle not in (None, SUCCEEDED, FAILED):
        raise InvalidRequest("settle is succeeded or failed", param="settle")
    if not isinstance(note, str) or not note.strip():
        raise InvalidRequest("a resolution needs a note", param="note")
    if len(note) > 1000:
        raise InvalidRequest("the note is longer than 1000 characters", param="note")
    with unit_of_work() as session:
        issue = session.get(ReconciliationIssue, issue_id, with_for_update=True)
        if issue is None:
            raise NotFound(f"No such reconciliation issue: '{issue_id}'", param="issue")
        if issue.status != OPEN:
            raise Conflict(f"issue {issue_id} was already resolved by {issue.resolved_by} at "
                           f"{view(issue)['resolved_at']}: {issue.resolution_note}", code="issue_already_resolved")
        before = view(issue)
        issue.status, issue.resolved_by, issue.resolved_at, issue.resolution_note = RESOLVED, actor, utcnow(), note
        session.flush()
        after = view(issue)
        if settle is not None:
            after["operation_status"] = _settle_operation(session, issue, settle, note)
        audit.record(session, actor=actor, action="reconciliation.resolve", target=issue_id, before=before,
                     after=after, reason=note)
    log.info("reconciliation issue %s (%s %s) resolved by %s: %s", issue_id, before["issue"],
             before["channel_reference"], actor, note)
    return after


def _settle_operation(session: Session, issue: ReconciliationIssue, status: str, note: str) -> str:
    from app.services.operations import attempts_of, settle

    op = session.get(Operation, issue.operation_id, with_for_update=True) if issue.operation_id else None
    if op is None:
        raise Conflict(f"issue {issue.id} is about no operation of ours: nothing to settle", code="nothing_to_settle")
    if op.status != PROCESSING:
        raise Conflict(f"operation {op.id} is already {op.status}", code="operation_already_final")
    with context.bound(context.current_request_id(), op.merchant_id, op.id):
        if not settle(session, op, status, "settled_by_operator", note[:500], attempts=attempts_of(session, op)):
            raise Conflict(f"operation {op.id} changed meanwhile; try again", code="operation_changed")
    log.warning("operation %s settled %s by an operator (issue %s): %s", op.id, status, issue.id, note)
    return op.status


def _resolve_rows(session: Session, ids: list[str], by: str, note: str) -> None:
    if ids:
        session.execute(update(_TABLE).where(_TABLE.c.id.in_(ids), _TABLE.c.status == OPEN)
                        .values(status=RESOLVED, resolved_by=by, resolved_at=utcnow(), resolution_note=note))


def listed_after_all(session: Session, ids: list[str], run_id: str) -> None:
    """``missing_at_channel`` issues whose operation a later run found on the channel's statement
    (app.services.reconcile._listed_now): closed by that run."""
    _resolve_rows(session, ids, f"reconciliation:{run_id}", "the channel's statement lists it now")


def statement_read(session: Session, channel_id: str, references: list[str], run_id: str,
                   whole_day: bool = True) -> None:
    """Open ``statement_unavailable`` issues of these references (``<account>:<day>``) whose
    statement ``run_id`` read after all: closed by that run; not ``whole_day`` (a near-real-time
    pass), only those a pass recorded (a daily run's failure waits for a daily run of its day)."""
    rows = session.execute(select(_TABLE.c.id, _TABLE.c.ours).where(
        _TABLE.c.channel == channel_id, _TABLE.c.kind == STATEMENT_UNAVAILABLE, _TABLE.c.status == OPEN,
        _TABLE.c.channel_reference.in_(references))).all()
    ids = [row.id for row in rows if whole_day or (row.ours or {}).get("mode") != "daily"]
    _resolve_rows(session, ids, f"reconciliation:{run_id}", "the account's statement was read")


def channel_reconciled(session: Session, ids: list[str], run_id: str) -> None:
    """``channel_not_reconciled`` issues whose operations ``run_id`` (with the channel's runs before
    it) compared after all, the channel running again: closed by that run."""
    _resolve_rows(session, ids, f"reconciliation:{run_id}",
                  "the channel runs again and its statement was compared over the operations not reconciled")


def settled_under_review(session: Session, op: Operation, status: str) -> None:
    """The channel settled an operation it had answered "unknown operation" about: its issue is closed."""
    ids = list(session.scalars(select(_TABLE.c.id).where(
        _TABLE.c.operation_id == op.id, _TABLE.c.kind == UNKNOWN_AT_CHANNEL, _TABLE.c.status == OPEN)))
    _resolve_rows(session, ids, f"channel:{op.channel}", f"the channel settled it: {status}")


def settled_as_stated(session: Session, op: Operation) -> None:
    """An operation reconciliation found still pending here is final now: its ``pending_in_payrouter``
    issues close if it ended as the statement said (otherwise they stay open: a real disagreement)."""
    rows = session.execute(select(_TABLE.c.id, _TABLE.c.theirs).where(
        _TABLE.c.operation_id == op.id, _TABLE.c.kind == PENDING_IN_PAYROUTER, _TABLE.c.status == OPEN)).all()
    agreed = [row.id for row in rows if (row.theirs or {}).get("status") == op.status]
    _resolve_rows(session, agreed, f"channel:{op.channel}", f"settled as the statement says: {op.status}")
