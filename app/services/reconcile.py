"""Reconciliation: our attempts against a channel's statement.

Two ways, one comparison:

- **batch** (``payrouter reconcile --channel --date``): one whole day;
- **near-real-time** (``reconcile_recent``, run by every batch worker every
  ``PAYROUTER_RECONCILE_INTERVAL`` seconds, one pass at a time across workers): the window since
  the previous pass up to a few seconds ago (what settled in the last seconds may still be on its
  way to us as a callback), so a disagreement is found within about a minute, not the next day.

Every statement line in the window is matched to our attempt on that channel by the channel's
reference. Issues found:

- ``missing_in_payrouter``: the channel settled an operation we have no record of;
- ``pending_in_payrouter``: we still wait for its outcome (a lost callback, or a timeout whose
  attempt never learned the channel's reference: those are found by asking the channel by our
  reference): a status query is queued at once, which settles it — compensation, not a report;
- ``status_mismatch`` / ``amount_mismatch``: both sides have it, and they disagree (ours is the
  status the merchant sees: ours ``failed`` and theirs ``succeeded`` is a mismatch, and the reverse);
- ``fee_mismatch``: the line's fee is not what the channel's ``cost`` says it charges;
- ``missing_at_channel``: we recorded a final outcome in the window that the statement lacks;
- ``unknown_at_channel``: an operation made in the window that the channel acknowledged and then
  answered "unknown operation" about (left processing for review; app.services.callbacks).

Each run is stored (``reconciliation_runs``) with its window and issues, for ops to follow up;
a run with issues is logged as a warning. Each issue is also a row of its own (app.services.issues),
open until an operator resolves it with a note.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

import redis
from sqlalchemy import delete, func, select

from app import context
from app.adapters import jobs
from app.adapters.channels_runtime import channel, registry
from app.adapters.db import read_only, unit_of_work
from app.adapters.models import Attempt, Operation, ReconciliationRun, new_id, utcnow
from app.adapters.redis_conn import get_redis
from app.config import get_config
from app.domain.errors import InvalidRequest
from app.domain.states import FINAL, PROCESSING, SUCCEEDED
from app.services import issues as issue_store
from channels.base import ChannelError, OperationNotSupported

log = logging.getLogger("payrouter.reconcile")
SETTLE_GRACE = dt.timedelta(seconds=10)  # lines younger than this wait for the next pass
FIRST_WINDOW = dt.timedelta(minutes=10)  # a channel's first pass looks this far back
MAX_WINDOW = dt.timedelta(days=1)  # after a long outage, catch up at most a day per pass
MIN_WINDOW = dt.timedelta(seconds=1)  # a shorter window waits for the next pass
LOOKBACK_DAYS = 7  # how far before a window an outcome learned late is looked for on statements
LEASE_KEY = "payrouter:reconcile:lease"


def _adapter(channel_id: str):
    try:
        return channel(channel_id)
    except KeyError:
        raise InvalidRequest(f"no such channel {channel_id}", param="channel") from None


def reconcile(channel_id: str, day: dt.date) -> ReconciliationRun:
    """The batch comparison of one channel's whole day."""
    adapter = _adapter(channel_id)
    start = dt.datetime.combine(day, dt.time())
    return _compare(channel_id, adapter, _Statements(adapter, day, day, lookback_days=0), start,
                    start + dt.timedelta(days=1), "daily")


def reconcile_recent(channel_id: str, now: dt.datetime | None = None) -> ReconciliationRun | None:
    """The near-real-time comparison: from the end of this channel's previous pass to now minus
    SETTLE_GRACE, at most MAX_WINDOW at a time (after an outage, the following passes catch up).
    None when the new window is shorter than MIN_WINDOW."""
    adapter = _adapter(channel_id)
    # Windows end on whole seconds: statements date their lines to the second, so each line
    # falls in exactly one window.
    until = ((now or utcnow()) - SETTLE_GRACE).replace(microsecond=0)
    with read_only() as session:
        since = session.scalar(select(func.max(ReconciliationRun.window_end)).where(
            ReconciliationRun.channel == channel_id, ReconciliationRun.mode == "continuous"))
    since = since or until - FIRST_WINDOW
    until = min(until, since + MAX_WINDOW)
    if until - since < MIN_WINDOW:
        return None
    return _compare(channel_id, adapter, _Statements(adapter, since.date(), until.date()), since, until,
                    "continuous")


class _Statements:
    """A channel's statement lines by reference, for the days a pass needs: those its window
    touches, and on demand up to ``lookback_days`` earlier days (an outcome we learned late may
    have settled at the channel days before), each day fetched once."""

    def __init__(self, adapter, first: dt.date, last: dt.date, lookback_days: int = LOOKBACK_DAYS):
        self.adapter, self.days, self.lines, self.lookback_days = adapter, set(), {}, lookback_days
        day = first
        while day <= last:
            self.fetch(day)
            day += dt.timedelta(days=1)

    def fetch(self, day: dt.date) -> None:
        if day not in self.days:
            self.days.add(day)
            try:
                lines = self.adapter.statement(day)
            except (ValueError, KeyError, TypeError) as exc:  # a line the adapter cannot read: the run fails (exit 1)
                raise ChannelError(f"the statement of channel {self.adapter.id} for {day.isoformat()} cannot be "
                                   f"read: {exc.__class__.__name__}: {exc}", code="statement_malformed") from exc
            self.lines.update({line.channel_reference: line for line in lines})

    def has(self, reference: str, since: dt.date) -> bool:
        """Is ``reference`` on the statement of any day from ``since`` (at most ``lookback_days``
        before the window) on, fetching the days not read yet?"""
        if reference in self.lines:
            return True
        first = min(self.days)
        day = max(since, first - dt.timedelta(days=self.lookback_days))
        while day < first:
            self.fetch(day)
            day += dt.timedelta(days=1)
        return reference in self.lines


PASS_BUDGET_SECONDS = 120  # a pass stops asking channels by reference after this long
LEASE_SECONDS = 2 * PASS_BUDGET_SECONDS + 60  # one channel's pass fits well inside (renewed per channel)
# Expire (or drop, for 0) the lease only while it is still ours: one atomic step.
_LEASE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
"""


def _lease(r, token: str, seconds: int) -> bool:
    return bool(r.eval(_LEASE_LUA, 1, LEASE_KEY, token, max(0, int(seconds))))


def run_continuous() -> dict:
    """One near-real-time pass over every channel that serves statements (batch workers call this
    every PAYROUTER_RECONCILE_INTERVAL seconds). A Redis lease keeps to one pass at a time across
    workers: renewed before each channel, and at the end left to expire one interval after the
    pass started, so passes neither overlap nor come more often than the interval."""
    interval = get_config().reconcile_interval
    if interval <= 0:
        return {}
    r, token, started = get_redis(), new_id("lease"), time.monotonic()
    if not r.set(LEASE_KEY, token, nx=True, ex=max(interval, LEASE_SECONDS)):
        return {}
    done = {}
    try:
        for channel_id in registry().ids():
            if not _lease(r, token, max(interval, LEASE_SECONDS)):
                log.warning("near-real-time reconciliation lease lost; stopping this pass")
                break
            try:
                run = reconcile_recent(channel_id)
            except OperationNotSupported:
                continue  # this channel serves no statement
            except ChannelError as exc:
                log.warning("near-real-time reconciliation of %s skipped: %s", channel_id, exc)
                continue
            if run is not None:
                done[channel_id] = len(run.issues)
    finally:
        _lease(r, token, interval - (time.monotonic() - started))
    return done


KEEP_EMPTY_RUNS = dt.timedelta(days=7)


def purge_empty_runs(now: dt.datetime | None = None, batch: int = 1000) -> int:
    """Delete near-real-time runs older than KEEP_EMPTY_RUNS that compared nothing and found
    nothing (a quiet channel makes one a minute); runs with lines or issues stay, and so does
    each channel's newest run, where its next pass starts."""
    cutoff = (now or utcnow()) - KEEP_EMPTY_RUNS
    with unit_of_work() as session:
        newest = dict(session.execute(select(ReconciliationRun.channel, func.max(ReconciliationRun.window_end))
                                      .where(ReconciliationRun.mode == "continuous")
                                      .group_by(ReconciliationRun.channel)).all())
        candidates = session.execute(
            select(ReconciliationRun.id, ReconciliationRun.channel, ReconciliationRun.window_end)
            .where(ReconciliationRun.mode == "continuous", ReconciliationRun.statement_lines == 0,
                   ReconciliationRun.issue_count == 0, ReconciliationRun.created_at < cutoff).limit(batch)).all()
        doomed = [run_id for run_id, channel_id, end in candidates if end != newest.get(channel_id)]
        if doomed:
            session.execute(delete(ReconciliationRun).where(ReconciliationRun.id.in_(doomed)))
    return len(doomed)


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _compare(channel_id: str, adapter, statement: _Statements, start: dt.datetime, end: dt.datetime,
             mode: str) -> ReconciliationRun:
    """Reads in short read-only sessions, asks the channel with no transaction open, then writes
    the run in one short transaction (a slow channel never holds a database lock)."""
    lines = {ref: line for ref, line in statement.lines.items() if start <= _naive_utc(line.settled_at) < end}
    with read_only() as session:
        by_ref = _attempts_by_reference(session, channel_id, list(lines))
        unanswered = _unanswered_candidates(session, channel_id) if set(lines) - set(by_ref) else []
        ours_in_window = session.execute(
            select(Attempt, Operation).join(Operation, Operation.id == Attempt.operation_id)
            .where(Attempt.channel == channel_id, Attempt.status.in_(FINAL), Attempt.channel_reference.is_not(None),
                   Attempt.updated_at >= start, Attempt.updated_at < end)).all()
        # Operations the channel answered "unknown operation" about (app.services.callbacks) made here.
        under_review = list(session.scalars(select(Operation).where(
            Operation.channel == channel_id, Operation.review.is_(True), Operation.status == PROCESSING,
            Operation.created_at >= start, Operation.created_at < end)))
        session.expunge_all()  # loaded and kept as they are: the session ends before the channel is asked
    by_ref.update(_ask_by_reference(adapter, unanswered, set(lines) - set(by_ref)))
    issues, matched, to_query = [], 0, []
    for ref, line in lines.items():
        found = _line_issues(adapter, ref, line, by_ref.get(ref))
        issues.extend(found)
        matched += not found
        to_query.extend(issue["ours"]["id"] for issue in found if issue["issue"] == "pending_in_payrouter")
    for attempt, op in ours_in_window:
        if not statement.has(attempt.channel_reference, op.created_at.date()):
            issues.append(_issue("missing_at_channel", attempt.channel_reference, op))
    issues.extend(_issue(issue_store.UNKNOWN_AT_CHANNEL, op.channel_reference, op) for op in under_review)
    with unit_of_work() as session:
        run = ReconciliationRun(id=new_id("recon"), channel=channel_id, day=(end - dt.timedelta(microseconds=1))
                                .date().isoformat(), mode=mode, window_start=start, window_end=end,
                                statement_lines=len(lines), matched=matched, issues=issues, issue_count=len(issues),
                                channel_fees=sum(line.fee for line in lines.values()),
                                request_id=context.current_request_id())
        issue_store.record(session, channel_id, issues, run.id)  # each issue dict gains its id and status
        session.add(run)
    for op_id in to_query:
        try:
            jobs.enqueue(jobs.CORE, "app.services.callbacks.query_status", op_id, job_id=f"query-{op_id}")
        except redis.RedisError:
            log.warning("status query for %s not queued (Redis unreachable); the sweep will do it", op_id)
    level = logging.WARNING if issues else logging.INFO if lines or mode == "daily" else logging.DEBUG
    log.log(level, "reconciled %s (%s, %s – %s): %s matched, %s issue(s)", channel_id, mode, start, end, matched,
            len(issues), extra={"channel": channel_id, **({"issues": issues[:20]} if issues else {})})
    return run


def _line_issues(adapter, ref: str, line, found: tuple | None) -> list[dict]:
    """What one statement line disagrees on with our record of it (``found``: the attempt and its
    operation), and its fee with the channel's cost; [] when it matches.

    Ours is what the merchant sees: the operation's status, if this attempt is the one that decided
    it (on the operation's channel, with its reference); else the attempt's own outcome (an attempt
    that failed over, or a soft decline retried elsewhere)."""
    if found is None:
        return [_issue("missing_in_payrouter", ref, theirs=line)] + _fee_issues(adapter, ref, line)
    attempt, op = found
    decided = attempt.channel == op.channel and op.channel_reference in (None, attempt.channel_reference)
    if attempt.status not in FINAL or op.status not in FINAL:
        return [_issue("pending_in_payrouter", ref, op, line)] + _fee_issues(adapter, ref, line, op)
    if attempt.status != line.status or (decided and op.status != line.status):
        kind = "status_mismatch"
    elif (op.amount, op.currency) != (line.amount, line.currency):
        kind = "amount_mismatch"
    else:
        return _fee_issues(adapter, ref, line, op)
    return [_issue(kind, ref, op, line)] + _fee_issues(adapter, ref, line, op)


def _fee_issues(adapter, ref: str, line, op: Operation | None = None) -> list[dict]:
    """The channel's fee on a line against its configured ``cost`` (channels.config.Cost): what it
    should charge on a succeeded line's amount, nothing on any other."""
    expected = adapter.cost.fee(line.amount) if line.status == SUCCEEDED else 0
    if line.fee == expected:
        return []
    issue = _issue("fee_mismatch", ref, op, line)
    issue["expected_fee"] = expected
    return [issue]


def _attempts_by_reference(session, channel_id: str, references: list[str]) -> dict:
    found = {}
    for start in range(0, len(references), 500):
        chunk = references[start:start + 500]
        for attempt, op in session.execute(
                select(Attempt, Operation).join(Operation, Operation.id == Attempt.operation_id)
                .where(Attempt.channel == channel_id, Attempt.channel_reference.in_(chunk))):
            found[attempt.channel_reference] = (attempt, op)
    return found


def _unanswered_candidates(session, channel_id: str, limit: int = 200) -> list:
    """Attempts that never learned the channel's reference (a timeout), oldest first."""
    return session.execute(
        select(Attempt, Operation).join(Operation, Operation.id == Attempt.operation_id)
        .where(Attempt.channel == channel_id, Attempt.channel_reference.is_(None), Operation.status == PROCESSING)
        .order_by(Attempt.created_at).limit(limit)).all()


def _ask_by_reference(adapter, candidates: list, unmatched: set[str]) -> dict:
    """Ask the channel about each candidate by our reference (no transaction open meanwhile), to
    match them to unmatched statement lines; stops after PASS_BUDGET_SECONDS."""
    found, deadline = {}, time.monotonic() + PASS_BUDGET_SECONDS
    for attempt, op in candidates:
        if not unmatched - set(found) or time.monotonic() > deadline:
            break
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
                           "currency": theirs.currency, "fee": theirs.fee}
    return issue


def summary(run: ReconciliationRun, statuses: dict[str, str] | None = None) -> dict:
    """A run as shown to operators: each issue with its id and its status now (``statuses``: the
    issues' statuses if already read), and how many of them are still open."""
    from app.services.representation import rfc3339

    if statuses is None:
        statuses = issue_store.statuses([issue["id"] for issue in run.issues if "id" in issue])
    # Runs stored before issues had rows of their own carry no id: open, as they were reported.
    shown = [{**issue, "status": statuses.get(issue.get("id"), issue_store.OPEN)} for issue in run.issues]
    return {"id": run.id, "channel": run.channel, "mode": run.mode, "date": run.day,
            "window_start": rfc3339(run.window_start), "window_end": rfc3339(run.window_end),
            "statement_lines": run.statement_lines, "matched": run.matched, "channel_fees": run.channel_fees,
            "open_issues": sum(issue["status"] == issue_store.OPEN for issue in shown), "issues": shown}


def recent_runs(channel_id: str | None = None, limit: int = 20, with_issues: bool = False) -> list[dict]:
    """The newest runs first; ``with_issues``: only runs that found something."""
    with read_only() as session:
        query = select(ReconciliationRun).order_by(ReconciliationRun.created_at.desc(), ReconciliationRun.id.desc())
        if channel_id:
            query = query.where(ReconciliationRun.channel == channel_id)
        if with_issues:
            query = query.where(ReconciliationRun.issue_count > 0)
        runs = list(session.scalars(query.limit(limit)))
        statuses = issue_store.statuses([issue["id"] for run in runs for issue in run.issues if "id" in issue])
        return [summary(run, statuses) for run in runs]
