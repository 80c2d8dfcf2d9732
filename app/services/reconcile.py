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
- ``duplicate_in_statement``: the statement lists one reference more than once (none of its lines
  counts as matched, whatever else they disagree on);
- ``missing_at_channel``: we recorded a final outcome in the window that the statement lacks;
- ``unknown_at_channel``: an operation made in the window that the channel acknowledged and then
  answered "unknown operation" about (left processing for review; app.services.callbacks).

Per account: a channel's statement lists one account's operations. The platform's account is
compared with the attempts made with the platform's credentials; each merchant channel account
(app.services.channel_accounts) is a run of its own (``channel_account``), its statement read with
its credentials and compared with the attempts made with them. One account never stops another
(``each_account``): a merchant account whose statement cannot be read (its credentials refused,
its PSP failing, a statement its adapter cannot read) is an open ``statement_unavailable`` issue
of its own for the day asked for (``statement_unavailable``; open again each time it fails again),
closed by a later run that reads that day (``_statement_read``); the platform's statement
unreadable is an error of the command, as before, after the other accounts.

A ``dispute`` line (a chargeback; its reference is the channel's dispute, not the payment) is
matched against our disputes instead (app.services.disputes): missing, status (``needs_response``,
``won``, ``lost``), amount and fee (none) as above.

Each run is stored (``reconciliation_runs``) with its window and issues, for ops to follow up;
a run with issues is logged as a warning. Each issue is also a row of its own (app.services.issues),
open until an operator resolves it with a note.
"""
from __future__ import annotations

import csv
import datetime as dt
import inspect
import io
import logging
import threading
import time
from decimal import Decimal
from types import SimpleNamespace

import redis
from sqlalchemy import and_, case, delete, exists, func, join, literal, or_, select, text, tuple_

from app import context
from app.adapters import account_channels, channel_definitions, jobs, staging
from app.adapters.channel_answers import ask
from app.adapters.channels_runtime import channel, registry
from app.adapters.db import read_only, serialize, unit_of_work
from app.adapters.models import Attempt, Dispute, Operation, ReconciliationIssue, ReconciliationRun, new_id, utcnow
from app.adapters.models import reconciliation_lines as LINES
from app.adapters.redis_conn import get_redis
from app.config import get_config
from app.domain.errors import InvalidRequest, NotFound
from app.domain.states import FINAL, PROCESSING, SUCCEEDED
from app.services import channel_accounts
from app.services import issues as issue_store
from app.services.search import cursor_after, keyset_page
from channels.base import ChannelError, OperationNotSupported

log = logging.getLogger("payrouter.reconcile")
SETTLE_GRACE = dt.timedelta(seconds=10)  # lines younger than this wait for the next pass
FIRST_WINDOW = dt.timedelta(minutes=10)  # a channel's first pass looks this far back
MAX_WINDOW = dt.timedelta(days=1)  # after a long outage, catch up at most a day per pass
MIN_WINDOW = dt.timedelta(seconds=1)  # a shorter window waits for the next pass
LOOKBACK_DAYS = 7  # how far before a window an outcome learned late is looked for on statements
LEASE_KEY = "payrouter:reconcile:lease"


def _adapter(channel_id: str, account: str | None = None):
    try:
        return channel(channel_id) if account is None else account_channels.adapter(channel_id, account)
    except KeyError:
        raise InvalidRequest(f"no such channel {channel_id}", param="channel") from None


def runs_here(channel_id: str) -> bool:
    """Whether this process runs ``channel_id``: its statement can be read here."""
    try:
        channel(channel_id)
    except KeyError:
        return False
    return True


def accounts(channel_id: str, day: dt.date | None = None) -> list[str | None]:
    """Whose statements a channel's reconciliation (of ``day``; None: now) reads: the platform's
    (None), then each merchant channel account's (app.services.channel_accounts.of_channel)."""
    with read_only() as session:
        return [None, *channel_accounts.of_channel(session, channel_id, day)]


def each_account(channel_id: str, mode: str, run_one, day: dt.date | None = None,
                 ) -> tuple[list, list[dict], list[tuple[str, Exception]]]:
    """``run_one(account)`` (``reconcile`` or ``reconcile_recent`` of one account) for each of the
    channel's ``accounts``, one's failure never stopping the next. Returns the runs (None left out),
    the issues of the merchant accounts whose statement could not be read (``statement_unavailable``
    of ``day``, the day a daily run was asked for; None: today, a near-real-time pass; recorded),
    and the errors as (name, exception): the platform's statement unreadable, or
    anything else that broke. OperationNotSupported (the channel serves no statement) is raised."""
    runs, unread, errors = [], [], []
    for account in accounts(channel_id, day):
        name = channel_id if account is None else f"{channel_id}/{account}"
        try:
            run = run_one(account)
        except OperationNotSupported:
            raise
        except ChannelError as exc:
            if account is None:
                errors.append((name, exc))
                continue
            try:
                run, issue = statement_unavailable(channel_id, account, mode, exc, day)
            except Exception as failed:  # noqa: BLE001 - not even recorded (the database down): an error
                errors.append((name, failed))
                continue
            unread.append(issue)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug, the database: said, and the others still run
            errors.append((name, exc))
            continue
        if run is not None:
            runs.append(run)
    return runs, unread, errors


# Every channel that has a stored run, or an attempt, one index probe per channel and table
# (ix_reconciliation_runs_window, ix_attempts_channel_ref): a loose index scan written out, as
# neither database does it by itself for DISTINCT.
def _loose_scan(table: str) -> text:
    return text(f"""
WITH RECURSIVE seen(channel) AS (
    SELECT MIN(channel) FROM {table}
    UNION ALL
    SELECT (SELECT MIN(r.channel) FROM {table} r WHERE r.channel > seen.channel)
    FROM seen WHERE seen.channel IS NOT NULL)
SELECT channel FROM seen WHERE channel IS NOT NULL""")


_RECONCILED_CHANNELS, _ATTEMPTED_CHANNELS = _loose_scan("reconciliation_runs"), _loose_scan("attempts")


def _open_issue(session, of_channel: tuple) -> ReconciliationIssue | None:
    """The open ``channel_not_reconciled`` issue of a channel (``of_channel``: its conditions), the oldest."""
    return session.execute(select(ReconciliationIssue)
                           .where(*of_channel, ReconciliationIssue.status == issue_store.OPEN)
                           .order_by(ReconciliationIssue.created_at).limit(1)).scalar_one_or_none()


def unreconciled_channels() -> list[dict]:
    """Channels with operations that this process does not run (pruned from the definitions, or
    stored but not buildable here) with outcomes of ours recorded since their reconciliation
    stopped, or never compared at all (pruned before their first run): their statements cannot be
    read without a definition, so a pass over "every channel" would skip them without a word. Each
    is a ``channel_not_reconciled`` issue, one per channel: while one is open it is the channel's
    issue, found again however far the channel's runs (by other processes) moved on; none open,
    one is recorded for the point its runs reached (reference ``<channel>:<since>``, the newest end
    of any of its runs' windows; never reconciled: ``since`` is its first attempt's time), once (an
    operator resolves it with a note; re-imported, the channel's passes compare the window from
    there on and close it). ``ours``: the channel, ``since``, whether it was ever ``reconciled``,
    how many attempts were recorded since (``attempts``, of which ``processing``) and with which
    merchant channel accounts (``accounts``), and whether it is still ``defined`` (stored but not
    built here). Returns the issues (with ``id`` and ``status``)."""
    running = set(registry().ids())
    with read_only() as session:
        gone = sorted({*session.execute(_RECONCILED_CHANNELS).scalars(),
                       *session.execute(_ATTEMPTED_CHANNELS).scalars()} - running)
    if not gone:
        return []
    stored = {cid for cid, _ in channel_definitions.current()}
    found = []
    for channel_id in gone:
        with read_only() as session:
            of_channel = (ReconciliationIssue.channel == channel_id,
                          ReconciliationIssue.kind == issue_store.CHANNEL_NOT_RECONCILED)
            if (still_open := _open_issue(session, of_channel)) is not None:  # counted when it was recorded
                found.append(issue_store.view(still_open))
                continue
            since = max(filter(None, (session.scalar(select(func.max(ReconciliationRun.window_end)).where(
                ReconciliationRun.channel == channel_id, ReconciliationRun.mode == mode))
                for mode in ("continuous", "daily"))), default=None)
            reconciled = since is not None
            if not reconciled:  # never compared: from its first attempt
                since = session.scalar(select(func.min(Attempt.updated_at)).where(Attempt.channel == channel_id))
                if since is None:
                    continue
            reference = f"{channel_id}:{since.isoformat()}"
            known = session.execute(select(ReconciliationIssue).where(
                *of_channel, ReconciliationIssue.channel_reference == reference)).scalar_one_or_none()
            if known is not None:  # resolved: not again every pass
                found.append(issue_store.view(known))
                continue
            counts = session.execute(select(func.count(), func.count().filter(Attempt.status == PROCESSING)).where(
                Attempt.channel == channel_id, Attempt.updated_at >= since)).one()
            if not counts[0]:
                continue
            used = sorted(session.scalars(select(Attempt.channel_account_id).distinct().where(
                Attempt.channel == channel_id, Attempt.updated_at >= since,
                Attempt.channel_account_id.is_not(None))))
        defined = channel_id in stored
        why = "stored, but this process cannot build it" if defined else "pruned from the channel definitions"
        if not reconciled:
            why += " before its first reconciliation run"
        issue = {"issue": issue_store.CHANNEL_NOT_RECONCILED, "channel_reference": reference,
                 "ours": {"channel": channel_id, "since": since.isoformat(), "reconciled": reconciled,
                          "attempts": counts[0], "processing": counts[1], "accounts": used, "defined": defined},
                 "theirs": {"error": "channel_not_built" if defined else "channel_not_defined",
                            "message": why + ": its statement cannot be read"}}
        with unit_of_work() as session:
            # Two processes finding the channel at once take turns: the second finds the first's issue.
            serialize(session, f"channel_not_reconciled:{channel_id}")
            if (meanwhile := _open_issue(session, of_channel)) is not None:
                found.append(issue_store.view(meanwhile))
                continue
            issue_store.record(session, channel_id, [issue])
        log.warning("reconciliation of %s stopped at %s: %s; %s attempt(s) recorded since are not compared "
                    "(issue %s)", channel_id, since, issue["theirs"]["message"], counts[0], issue["id"],
                    extra={"channel": channel_id})
        found.append(issue)
    return found


def unread_reference(account: str, day: dt.date) -> str:
    """A ``statement_unavailable`` issue's reference: the account and the statement's day."""
    return f"{account}:{day.isoformat()}"


def statement_unavailable(channel_id: str, account: str, mode: str, error: Exception,
                          day: dt.date | None = None) -> tuple[ReconciliationRun | None, dict]:
    """Record that merchant channel account ``account``'s statement of ``day`` (default: today, UTC)
    could not be read (``error``: its credentials refused, its PSP failing, a statement its adapter
    cannot read): an open ``statement_unavailable`` issue (one per account and day, however many
    passes fail; one resolved before is open again: app.services.issues.RECURRING), naming the
    account and its merchant, whether it is deleted, the day, the ``mode`` that failed, and the
    error (its code and message, never a credential). Closed by a later run that reads that day
    (``_statement_read``): any run of the account whose window is that day's; a ``daily`` failure
    only by a daily run of that day (a near-real-time pass compares a window of it, not the whole
    day). A ``daily`` run is also recorded, naming the issue (no
    line read), so the day's runs say so; a near-real-time pass records the issue alone (its window
    stays where it was: the next pass tries again). Returns (the run or None, the issue)."""
    from app.adapters.models import ChannelAccount

    day = day or utcnow().date()
    code = getattr(error, "code", type(error).__name__)
    message = getattr(error, "message", str(error))[:300]
    with unit_of_work() as session:
        row = session.get(ChannelAccount, account)
        ours = {"channel_account": account, "merchant": row.merchant_id if row else None,
                "deleted": bool(row is None or row.deleted_at is not None), "date": day.isoformat(),
                "mode": mode}
        issue = {"issue": issue_store.STATEMENT_UNAVAILABLE, "channel_reference": unread_reference(account, day),
                 "ours": ours, "theirs": {"error": code, "message": message}}
        run = None
        if mode == "daily":
            start = dt.datetime.combine(day, dt.time())
            run = ReconciliationRun(
                id=new_id("recon"), channel=channel_id, day=day.isoformat(), mode=mode, window_start=start,
                window_end=start + dt.timedelta(days=1), statement_lines=0, matched=0, issue_count=1,
                channel_fees=0, channel_account=account, request_id=context.current_request_id(),
                summary={"lines": 0, "matched": 0, "by_class": {issue_store.STATEMENT_UNAVAILABLE: 1},
                         "error": {"code": code, "message": message}})
        issue_store.record(session, channel_id, [issue], run.id if run else None)
        if run is not None:
            run.issues = [issue]
            session.add(run)
    log.warning("reconciliation of %s account %s (%s): its statement of %s cannot be read: %s (issue %s)",
                channel_id, account, mode, day, message, issue["id"], extra={"channel": channel_id})
    if run is not None:
        with read_only() as session:  # as stored (a run is shown from its row)
            run = session.get(ReconciliationRun, run.id)
            session.expunge(run)
    return run, issue


def _of_account(column, account: str | None):
    """``column`` names ``account`` (None: the platform's credentials made it)."""
    return column.is_(None) if account is None else column == account


def reconcile(channel_id: str, day: dt.date, account: str | None = None) -> ReconciliationRun:
    """The batch comparison of one channel's whole day, for one account (None: the platform's; an
    outcome of ours recorded that day for an operation made earlier is also looked for on the
    earlier days' statements: the channel may have settled it before midnight)."""
    adapter = _adapter(channel_id, account)
    start = dt.datetime.combine(day, dt.time())
    return _compare(channel_id, adapter, _Statements(adapter, day, day), start, start + dt.timedelta(days=1), "daily",
                    account)


def reconcile_recent(channel_id: str, now: dt.datetime | None = None,
                     account: str | None = None) -> ReconciliationRun | None:
    """The near-real-time comparison: from the end of this channel's (and account's) previous pass
    to now minus SETTLE_GRACE, at most MAX_WINDOW at a time (after an outage, the following passes
    catch up). None when the new window is shorter than MIN_WINDOW, or when another pass recorded
    it first."""
    adapter = _adapter(channel_id, account)
    # Windows end on whole seconds: statements date their lines to the second, so each line
    # falls in exactly one window.
    until = ((now or utcnow()) - SETTLE_GRACE).replace(microsecond=0)
    with read_only() as session:
        since = session.scalar(_newest_window(channel_id, account))
    since = since or until - FIRST_WINDOW
    until = min(until, since + MAX_WINDOW)
    if until - since < MIN_WINDOW:
        return None
    return _compare(channel_id, adapter, _Statements(adapter, since.date(), until.date(), since=since), since, until,
                    "continuous", account)


def _newest_window(channel_id: str, account: str | None):
    """Where the next near-real-time pass of this channel and account starts."""
    return select(func.max(ReconciliationRun.window_end)).where(
        ReconciliationRun.channel == channel_id, ReconciliationRun.mode == "continuous",
        _of_account(ReconciliationRun.channel_account, account))


class _Statements:
    """A channel's statement staged in the database as it streams in (app.adapters.staging), under
    one load id, for the days a pass needs: those its window touches (the first from ``since`` on,
    for a near-real-time pass: its cost follows the new lines, not the day), and on demand up to
    ``lookback_days`` earlier (an outcome we learned late may have settled at the channel before),
    under a load id of their own (``earlier_id``: what the window compares never grows meanwhile);
    each part fetched once. ``discard`` deletes the rows; a fetch that fails deletes them too."""

    def __init__(self, adapter, first: dt.date, last: dt.date, lookback_days: int = LOOKBACK_DAYS,
                 since: dt.datetime | None = None):
        self.adapter, self.days, self.lookback_days = adapter, set(), lookback_days
        self.first, self.since, self.load_id, self.loaded = first, since, staging.new_load_id(), 0
        self.earlier_id = staging.new_load_id()
        self.takes_since = "since" in inspect.signature(adapter.statement).parameters
        self.started = time.monotonic()
        try:
            day = first
            while day <= last:
                self.fetch(day, since if day == first else None)
                day += dt.timedelta(days=1)
        except BaseException:
            self.discard()
            raise

    @property
    def load_ids(self) -> tuple[str, str]:
        return self.load_id, self.earlier_id

    def fetch(self, day: dt.date, since: dt.datetime | None = None, before: dt.datetime | None = None,
              earlier: bool = False) -> None:
        """Stage the lines of ``day`` settled in [since, before) (naive UTC; None: unbounded);
        ``earlier``: under ``earlier_id``."""
        self.days.add(day)
        try:
            if since is not None and self.takes_since:
                lines = self.adapter.statement(day, since=since.replace(tzinfo=dt.timezone.utc))
            else:
                lines = self.adapter.statement(day)
            keep = None if since is None and before is None else (
                lambda settled: (since is None or settled >= since) and (before is None or settled < before))
            self.loaded += staging.load(self.earlier_id if earlier else self.load_id, lines, keep)
        except ChannelError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, OverflowError, csv.Error) as exc:  # a bad line: exit 1
            raise ChannelError(f"{self.adapter.id}: the statement for {day.isoformat()} cannot be read: {exc}",
                               code="statement_malformed") from exc

    def reach_back(self, created: dt.datetime) -> bool:
        """Stage what an operation created at ``created`` may have settled on before the window: the
        first day before ``since``, and earlier days from ``created`` on (at most ``lookback_days``
        before the first). False when there was nothing more to fetch."""
        fetched = False
        if self.since is not None and created < self.since:
            since = created.replace(microsecond=0) if created.date() == self.first else None
            self.fetch(self.first, since, before=self.since, earlier=True)
            self.since, fetched = since, True
        day = max(created.date(), self.first - dt.timedelta(days=self.lookback_days))
        while day < self.first:
            if day not in self.days:  # the operation's own day from its creation on, later days whole
                self.fetch(day, created.replace(microsecond=0) if day == created.date() else None, earlier=True)
                fetched = True
            day += dt.timedelta(days=1)
        return fetched

    def discard(self) -> None:
        staging.discard(self.load_id)
        staging.discard(self.earlier_id)


PASS_BUDGET_SECONDS = 120  # a pass stops asking channels by reference after this long
LEASE_SECONDS = 2 * PASS_BUDGET_SECONDS + 60  # renewed every third of it while a pass runs, and per channel
# Expire (or drop, for 0) the lease only while it is still ours: one atomic step.
_LEASE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
"""


def _lease(r, token: str, seconds: int) -> bool:
    return bool(r.eval(_LEASE_LUA, 1, LEASE_KEY, token, max(0, int(seconds))))


class _KeptLease(threading.Thread):
    """Renews a pass's lease every third of its length while the pass runs (one channel's slow
    statement may take longer than the lease), from a thread of its own; ``lost`` once it is no
    longer ours. A Redis error is logged and tried again at the next beat."""

    def __init__(self, r, token: str, seconds: int):
        super().__init__(name="payrouter-reconcile-lease", daemon=True)
        self.r, self.token, self.seconds = r, token, seconds
        self.stopped, self.lost = threading.Event(), threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.seconds / 3):
            try:
                if not _lease(self.r, self.token, self.seconds):
                    self.lost.set()
                    return
            except redis.RedisError as exc:
                log.warning("near-real-time reconciliation lease not renewed: %s", exc)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


class _LeaseLost(Exception):
    """The pass's lease is no longer ours: it stops before its next account."""


def run_continuous() -> dict:
    """One near-real-time pass over every channel that serves statements (batch workers call this
    every PAYROUTER_RECONCILE_INTERVAL seconds). A Redis lease keeps to one pass at a time across
    workers: renewed all along the pass (``_KeptLease``) and before each channel, and at the end
    left to expire one interval after the pass started, so passes neither overlap nor come more
    often than the interval."""
    interval = get_config().reconcile_interval
    if interval <= 0:
        return {}
    r, token, started = get_redis(), new_id("lease"), time.monotonic()
    seconds = max(interval, LEASE_SECONDS)
    if not r.set(LEASE_KEY, token, nx=True, ex=seconds):
        return {}
    done, kept = {}, _KeptLease(r, token, seconds)
    kept.start()
    def one(channel_id: str, account: str | None):
        if kept.lost.is_set() or not _lease(r, token, seconds):
            raise _LeaseLost
        return reconcile_recent(channel_id, account=account)

    try:
        for channel_id in registry().ids():
            try:
                runs, _, errors = each_account(channel_id, "continuous",
                                                lambda account, cid=channel_id: one(cid, account))
            except OperationNotSupported:
                continue  # this channel serves no statement
            for run in runs:
                done[channel_id if run.channel_account is None else f"{channel_id}/{run.channel_account}"] = \
                    run.issue_count
            # Its window stays where it was: the next pass tries it again (unread merchant accounts
            # are issues of their own, logged by statement_unavailable).
            for name, exc in errors:
                if isinstance(exc, _LeaseLost):
                    continue
                if isinstance(exc, ChannelError):
                    log.warning("near-real-time reconciliation of %s skipped: %s", name, exc)
                else:
                    log.error("near-real-time reconciliation of %s failed", name, exc_info=exc)
            if any(isinstance(exc, _LeaseLost) for _, exc in errors):
                log.warning("near-real-time reconciliation lease lost; stopping this pass")
                break
        else:
            try:  # channels with outcomes no pass can compare any more (logged, an issue each)
                unreconciled_channels()
            except Exception:  # noqa: BLE001 - the next pass looks again
                log.exception("near-real-time reconciliation: channels no longer run not looked for")
    finally:
        kept.stop()
        try:
            _lease(r, token, interval - (time.monotonic() - started))
        except redis.RedisError as exc:  # the lease expires by itself; never hide what happened above
            log.warning("near-real-time reconciliation lease not released: %s", exc)
    return done


KEEP_EMPTY_RUNS = dt.timedelta(days=7)


def purge_empty_runs(now: dt.datetime | None = None, batch: int = 1000) -> int:
    """Delete near-real-time runs older than KEEP_EMPTY_RUNS that compared nothing and found
    nothing (a quiet channel makes one a minute); runs with lines or issues stay, and so does
    each channel's (and account's) newest run, where its next pass starts."""
    cutoff = (now or utcnow()) - KEEP_EMPTY_RUNS
    run = ReconciliationRun
    with unit_of_work() as session:
        newest = {(channel_id, account): end for channel_id, account, end in session.execute(
            select(run.channel, run.channel_account, func.max(run.window_end)).where(run.mode == "continuous")
            .group_by(run.channel, run.channel_account))}
        candidates = session.execute(
            select(run.id, run.channel, run.channel_account, run.window_end)
            .where(run.mode == "continuous", run.statement_lines == 0,
                   run.issue_count == 0, run.created_at < cutoff).limit(batch)).all()
        doomed = [run_id for run_id, channel_id, account, end in candidates if end != newest.get((channel_id, account))]
        if doomed:
            session.execute(delete(ReconciliationRun).where(ReconciliationRun.id.in_(doomed)))
    return len(doomed)


def _compare(channel_id: str, adapter, statement: _Statements, start: dt.datetime, end: dt.datetime,
             mode: str, account: str | None = None) -> ReconciliationRun | None:
    """Matches the staged statement with our records (of ``account``: the attempts made with its
    credentials) in SQL, then deletes it (whatever happens: a run that fails records nothing).
    None: a near-real-time pass whose window another pass (a worker's, or ``reconcile --recent``)
    recorded meanwhile."""
    try:
        return _compare_staged(channel_id, adapter, statement, start, end, mode, account)
    finally:
        statement.discard()


def _compare_staged(channel_id: str, adapter, statement: _Statements, start: dt.datetime, end: dt.datetime,
                    mode: str, account: str | None = None) -> ReconciliationRun | None:
    """Set-wise: one query counts the window's lines and sums their fees, one returns only the lines
    that disagree with our record or have none (an outer join on the channel's reference), one the
    outcomes of ours in the window that no staged line lists (an anti-join); only those rows reach
    Python, to be worded as issues. Reads in short read-only sessions, asks the channel (about
    timed-out attempts) with no transaction open, then writes the run in one transaction, in which
    the disagreeing rows are streamed (``ISSUE_CHUNK`` at a time: a server-side cursor on
    PostgreSQL) and each chunk's issues stored as rows (app.services.issues.record): memory stays
    bounded however many issues a statement yields; the run keeps their counts by class and the
    first ``ISSUE_SAMPLE`` of them. A run that fails rolls back with every issue it wrote."""
    # A daily run compares every line of its day's statement, whatever time the line bears (a channel
    # that dates its day in its own time zone, a line at midnight): each line is on one day's
    # statement, so exactly one daily run counts it. (Earlier days are staged only later, by
    # _missing_at_channel's reach_back.) A near-real-time pass takes the lines settled in its window.
    in_window = (LINES.c.load_id == statement.load_id if mode == "daily" else
                 and_(LINES.c.load_id == statement.load_id, LINES.c.settled_at >= start, LINES.c.settled_at < end))
    with read_only() as session:
        theirs = {currency: {"lines": lines, "amount": int(amount), "fee": int(fee)}
                  for currency, lines, amount, fee in session.execute(
                      select(LINES.c.currency, func.count(), func.sum(LINES.c.amount), func.sum(LINES.c.fee))
                      .where(in_window).group_by(LINES.c.currency))}
        count, fees = sum(t["lines"] for t in theirs.values()), sum(t["fee"] for t in theirs.values())
        ours = {currency: {"outcomes": outcomes, "amount": int(amount)}
                for currency, outcomes, amount in session.execute(
                    select(Operation.currency, func.count(), func.sum(SETTLED_AMOUNT))
                    .join(Attempt, Operation.id == Attempt.operation_id)
                    .where(Attempt.channel == channel_id, Attempt.status.in_(sorted(FINAL)),
                           _of_account(Attempt.channel_account_id, account),
                           Attempt.updated_at >= start, Attempt.updated_at < end).group_by(Operation.currency))}
        unmatched = _unmatched_lines(channel_id, in_window, account)
        lines = unmatched.subquery()
        unmatched_count = session.scalar(select(func.count(func.distinct(lines.c.channel_reference)))) if count else 0
        unanswered = _unanswered_candidates(session, channel_id, account) if unmatched_count else []
        session.expunge_all()  # loaded and kept as they are: the session ends before the channel is asked
    asked = _ask_by_reference(adapter, unanswered, unmatched, unmatched_count)
    missing = _missing_at_channel(channel_id, statement, start, end, account)
    found = _Found(channel_id)
    with unit_of_work() as session:
        if mode == "continuous" and not _window_unclaimed(session, channel_id, start, account):
            log.info("near-real-time reconciliation of %s from %s not recorded: another pass compared this "
                     "window meanwhile", channel_id, start)
            return None
        run_id = new_id("recon")
        unmatched_lines = 0
        if count:
            issues, unmatched_lines = _dispute_issues(channel_id, adapter, in_window)
            found.add(session, run_id, issues)
            unmatched_lines += _line_findings(session, found, run_id, adapter, asked,
                                              _disagreeing(channel_id, adapter.cost, in_window, account)
                                              .add_columns(_listed_twice(in_window).label("listed_twice")))
            unmatched_lines += _duplicate_findings(session, found, run_id, _duplicated(channel_id, in_window, account))
        for query in missing:
            for chunk in _chunks(_streamed(session, query)):
                found.add(session, run_id, [_issue(issue_store.MISSING_AT_CHANNEL, row.channel_reference, row)
                                            for row in chunk])
        # Operations the channel answered "unknown operation" about (app.services.callbacks) made here.
        for chunk in _chunks(_streamed(session, select(
                Operation.id, Operation.status, Operation.amount, Operation.currency, Operation.channel_reference)
                .where(Operation.channel == channel_id, _of_account(Operation.channel_account_id, account),
                       Operation.review.is_(True), Operation.status == PROCESSING,
                       Operation.created_at >= start, Operation.created_at < end))):
            found.add(session, run_id, [_issue(issue_store.UNKNOWN_AT_CHANNEL, op.channel_reference, op)
                                        for op in chunk])
        matched = count - unmatched_lines
        report = {"lines": count, "matched": matched, "by_class": found.by_class, "theirs": theirs, "ours": ours,
                  "seconds": round(time.monotonic() - statement.started, 3)}
        run = ReconciliationRun(id=run_id, channel=channel_id, day=(end - dt.timedelta(microseconds=1))
                                .date().isoformat(), mode=mode, window_start=start, window_end=end,
                                statement_lines=count, matched=matched, issues=found.sample, issue_count=found.count,
                                channel_fees=int(fees), summary=report, channel_account=account,
                                request_id=context.current_request_id())
        issue_store.listed_after_all(session, _listed_now(session, channel_id, statement.load_ids, account), run.id)
        if account is not None:
            _statement_read(session, channel_id, account, start, end, mode, run.id)
        session.add(run)
        _caught_up(session, channel_id, run.id)
    for op_id in found.to_query:
        try:
            jobs.enqueue(jobs.CORE, "app.services.callbacks.query_status", op_id, job_id=f"query-{op_id}")
        except redis.RedisError:
            log.warning("status query for %s not queued (Redis unreachable); the sweep will do it", op_id)
    level = logging.WARNING if found.count else logging.INFO if count or mode == "daily" else logging.DEBUG
    log.log(level, "reconciled %s%s (%s, %s – %s): %s line(s), %s matched, %s issue(s)", channel_id,
            f" account {account}" if account else "", mode, start, end, count, matched, found.count,
            extra={"channel": channel_id, **({"issues": found.sample[:20]} if found.count else {})})
    return run


def _statement_read(session, channel_id: str, account: str, start: dt.datetime, end: dt.datetime, mode: str,
                    run_id: str) -> None:
    """The account's statement was read and compared for [start, end): the open
    ``statement_unavailable`` issues of the days that window is on close (a daily run: its day,
    whatever failed on it; a near-real-time pass: the days its window touches, the failures of
    passes only; never the earlier days a run only reached back to)."""
    day, last, references = start.date(), (end - dt.timedelta(microseconds=1)).date(), []
    while day <= last:
        references.append(unread_reference(account, day))
        day += dt.timedelta(days=1)
    issue_store.statement_read(session, channel_id, references, run_id,
                               whole_day=mode == "daily")


def _caught_up(session, channel_id: str, run_id: str) -> None:
    """The channel runs again (imported again, or built here now): its open ``channel_not_reconciled``
    issues whose operations are compared now are closed by this run. One is, once the platform's
    account and each merchant channel account that carried attempts then (``ours.accounts``) has
    compared everything from ``since`` to when the issue was recorded: a near-real-time pass whose
    window reaches that point (passes follow on from one another), or daily runs that read each of
    those days. An import alone closes nothing."""
    rows = session.execute(select(ReconciliationIssue.id, ReconciliationIssue.ours, ReconciliationIssue.created_at)
                           .where(ReconciliationIssue.status == issue_store.OPEN,
                                  ReconciliationIssue.channel == channel_id,
                                  ReconciliationIssue.kind == issue_store.CHANNEL_NOT_RECONCILED)).all()
    if not rows:
        return
    session.flush()  # this run among those read
    closed = [row.id for row in rows if all(
        _compared(session, channel_id, account, dt.datetime.fromisoformat(row.ours["since"]), row.created_at)
        for account in [None, *row.ours.get("accounts", [])])]
    issue_store.channel_reconciled(session, closed, run_id)


def _compared(session, channel_id: str, account: str | None, since: dt.datetime, until: dt.datetime) -> bool:
    """Has ``account`` (None: the platform's) of the channel compared its statement from ``since``
    to ``until``: near-real-time windows from ``since`` or before (passes follow on from one another
    from the account's first, which looks back only FIRST_WINDOW: a channel never reconciled before
    is not compared from its first attempt by them) to ``until`` or later, or a daily run that read
    each day between (one that could not read its statement does not count)."""
    runs = (ReconciliationRun.channel == channel_id, _of_account(ReconciliationRun.channel_account, account))
    first, end = session.execute(select(func.min(ReconciliationRun.window_start),
                                        func.max(ReconciliationRun.window_end))
                                 .where(*runs, ReconciliationRun.mode == "continuous")).one()
    if end is not None and end >= until and first is not None and first <= since:
        return True
    days = {(since.date() + dt.timedelta(days=n)).isoformat() for n in range((until.date() - since.date()).days + 1)}
    read = {day for day, summary in session.execute(select(ReconciliationRun.day, ReconciliationRun.summary).where(
        *runs, ReconciliationRun.mode == "daily", ReconciliationRun.day.in_(sorted(days))))
        if not (summary or {}).get("error")}
    return days <= read


ISSUE_CHUNK = 2000  # disagreeing rows read, worded and stored at a time
ISSUE_SAMPLE = 100  # issues a run keeps whole (the rest are rows of app.services.issues)


class _Found:
    """What a run found so far: each chunk of issues stored as rows at once, then dropped; kept are
    counts by class, the first ISSUE_SAMPLE issues (with their ids and statuses) and the operations
    still pending here (a status query is queued for each once the run is recorded)."""

    def __init__(self, channel_id: str):
        self.channel_id, self.count, self.by_class, self.sample, self.to_query = channel_id, 0, {}, [], {}

    def add(self, session, run_id: str, issues: list[dict]) -> None:
        if not issues:
            return
        issue_store.record(session, self.channel_id, issues, run_id)  # each issue dict gains its id and status
        for issue in issues:
            self.by_class[issue["issue"]] = self.by_class.get(issue["issue"], 0) + 1
            if issue["issue"] == issue_store.PENDING_IN_PAYROUTER:
                self.to_query[issue["ours"]["id"]] = None
        self.sample.extend(issues[:ISSUE_SAMPLE - len(self.sample)])
        self.count += len(issues)


def _chunks(rows):
    """``rows`` (a list, or a result streamed from the database) ISSUE_CHUNK at a time."""
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == ISSUE_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _streamed(session, query):
    """``query``'s rows as they come (PostgreSQL: a server-side cursor, ISSUE_CHUNK rows a fetch)."""
    return session.execute(query.execution_options(yield_per=ISSUE_CHUNK))


def _line_findings(session, found: _Found, run_id: str, adapter, asked: dict, query) -> int:
    """The issues of the window's disagreeing lines, streamed and stored chunk by chunk; how many
    lines disagree (those listed twice are counted by ``_duplicate_findings``)."""
    lines = 0
    for chunk in _chunks(_streamed(session, query)):
        issues = []
        for row in chunk:
            ref = row.channel_reference
            line_issues = _line_issues(adapter, ref, _theirs(row),
                                       asked.get(ref) or (None if row.attempt_id is None else _ours(row)))
            issues.extend(line_issues)
            lines += bool(line_issues) and not row.listed_twice
        found.add(session, run_id, issues)
    return lines


def _duplicate_findings(session, found: _Found, run_id: str, query) -> int:
    """One ``duplicate_in_statement`` issue per reference and family listed more than once (rows
    come ordered by reference), stored chunk by chunk; how many lines they are."""
    lines, issues, group = 0, [], {}

    def flush_group():
        nonlocal lines
        for rows in group.values():
            issue = _issue(issue_store.DUPLICATE_IN_STATEMENT, rows[0].channel_reference,
                           None if rows[0].op_id is None else _ours(rows[0])[1], _theirs(rows[0]))
            issue["lines"] = len(rows)
            issues.append(issue)
            lines += len(rows)
        group.clear()

    for row in _streamed(session, query):
        if group and row.channel_reference != next(iter(group.values()))[0].channel_reference:
            flush_group()
            if len(issues) >= ISSUE_CHUNK:
                found.add(session, run_id, issues)
                issues = []
        group.setdefault(_line_family(row.operation), []).append(row)
    flush_group()
    found.add(session, run_id, issues)
    return lines


def _listed_now(session, channel_id: str, load_ids: tuple[str, ...], account: str | None = None) -> list[str]:
    """Open ``missing_at_channel`` issues of this channel (and account) whose operation or dispute a
    line of these loads lists (found by a pass that ran before the channel's statement had it: a
    statement later than SETTLE_GRACE): what they say is no longer true."""
    issue = ReconciliationIssue
    open_here = (issue.status == issue_store.OPEN, issue.channel == channel_id,
                 issue.kind == issue_store.MISSING_AT_CHANNEL)
    listed = LINES.c.load_id.in_(load_ids), LINES.c.channel_reference == issue.channel_reference
    return [*session.scalars(select(issue.id).join(Operation, Operation.id == issue.operation_id).where(
        *open_here, _of_account(Operation.channel_account_id, account), exists().where(*listed, _same_family()))),
            *session.scalars(select(issue.id).join(Dispute, Dispute.id == issue.operation_id).where(
                *open_here, _of_account(Dispute.channel_account_id, account),
                exists().where(*listed, LINES.c.operation == DISPUTE)))]


def _window_unclaimed(session, channel_id: str, start: dt.datetime, account: str | None = None) -> bool:
    """No near-real-time pass of this channel (and account) was recorded from ``start`` on since
    this one began (its newest window ends at or before it), checked under the channel's lock in
    the writing transaction: of two passes that set out over one window, exactly one is recorded."""
    serialize(session, f"reconcile:{channel_id}")
    newest = session.scalar(_newest_window(channel_id, account))
    return newest is None or newest <= start


def _fee_sql(cost, amount, status):
    """``Cost.fee`` in SQL, exactly (integers only, on both backends): half-up rounding of
    amount·percent/100 is floor((2·amount·num + 100·den) / (200·den)) for percent = num/den, split
    at d = 200·den so no product outgrows 64 bits for any amount below MAX_AMOUNT."""
    num, den = Decimal(cost.percent).as_integer_ratio()
    d = 200 * den
    percent_part = (amount // d) * (2 * num) + ((amount % d) * (2 * num) + 100 * den) // d
    return case((status == SUCCEEDED, percent_part + cost.fixed), else_=0)


# What an operation settled at its channel: a payment's captured amount (a partial capture releases
# the rest, and the channel's line is the capture), else its amount.
SETTLED_AMOUNT = func.coalesce(Operation.amount_captured, Operation.amount)


def _disagreeing(channel_id: str, cost, in_window, account: str | None = None):
    """The window's lines with no attempt of ours, or one still pending, or that disagree with it
    on status (ours: the attempt's, and the operation's if that attempt decided it), amount,
    currency, or whose fee is not the channel's cost: everything ``_line_issues`` may report."""
    final = sorted(FINAL)
    decided = and_(Attempt.channel == Operation.channel,
                   or_(Operation.channel_reference.is_(None), Operation.channel_reference == Attempt.channel_reference))
    return _lines_with_ours(channel_id, account).where(LINES.c.operation != DISPUTE).where(
        in_window, or_(Attempt.id.is_(None), Attempt.status.not_in(final), Operation.status.not_in(final),
                       Attempt.status != LINES.c.status, and_(decided, Operation.status != LINES.c.status),
                       SETTLED_AMOUNT != LINES.c.amount, Operation.currency != LINES.c.currency,
                       LINES.c.fee != _fee_sql(cost, LINES.c.amount, LINES.c.status)))


DISPUTE = "dispute"  # a statement line's operation for a chargeback: matched against our disputes


def _dispute_issues(channel_id: str, adapter, in_window) -> tuple[list[dict], int]:
    """The window's dispute lines that disagree with our dispute of the channel's reference (or have
    none), as issues, and how many lines they are: one query, over the disputes' unique key."""
    with read_only() as session:
        rows = session.execute(
            select(LINES.c.channel_reference, LINES.c.operation, LINES.c.amount, LINES.c.currency, LINES.c.status,
                   LINES.c.fee, Dispute.id.label("dp_id"), Dispute.status.label("dp_status"),
                   Dispute.amount.label("dp_amount"), Dispute.currency.label("dp_currency"))
            .select_from(LINES.outerjoin(Dispute, and_(Dispute.channel == channel_id,
                                                       Dispute.channel_reference == LINES.c.channel_reference)))
            .where(in_window, LINES.c.operation == DISPUTE,
                   or_(Dispute.id.is_(None), Dispute.status != LINES.c.status, Dispute.amount != LINES.c.amount,
                       Dispute.currency != LINES.c.currency, LINES.c.fee != 0))).all()
    issues, lines = [], 0
    for row in rows:
        line, ours = _theirs(row), None
        if row.dp_id is not None:
            ours = SimpleNamespace(id=row.dp_id, status=row.dp_status, amount=row.dp_amount, currency=row.dp_currency)
        if ours is None:
            kind = "missing_in_payrouter"
        elif ours.status != line.status:
            kind = "status_mismatch"
        elif (ours.amount, ours.currency) != (line.amount, line.currency):
            kind = "amount_mismatch"
        else:
            kind = None
        found = ([_issue(kind, row.channel_reference, ours, line)] if kind else []) + _fee_issues(
            adapter, row.channel_reference, line, ours)
        issues.extend(found)
        lines += bool(found)
    return issues, lines


def _duplicated(channel_id: str, in_window, account: str | None = None):
    """Every line of the window whose reference the window lists more than once in one family (a
    channel that sends one operation twice charges its fee twice; a refund under its payment's
    reference is another operation): a GROUP BY … HAVING over the load's index."""
    return (_lines_with_ours(channel_id, account).where(in_window, _listed_twice(in_window))
            .order_by(LINES.c.channel_reference, LINES.c.settled_at))


def _listed_twice(in_window):
    """A line's reference is listed more than once in the window, in the line's family."""
    family = _family(LINES.c.operation, LINE_FAMILIES)
    # Grouped over a subquery's columns: PostgreSQL would not take a GROUP BY of an expression
    # whose parameters are bound apart from the select list's.
    lines = (select(LINES.c.channel_reference.label("ref"), family.label("family")).where(in_window)
             .subquery("window_lines"))
    twice = select(lines.c.ref, lines.c.family).group_by(lines.c.ref, lines.c.family).having(func.count() > 1)
    return tuple_(LINES.c.channel_reference, family).in_(twice)


def _unmatched_lines(channel_id: str, in_window, account: str | None = None):
    """The window's lines (not disputes) with no attempt of ours: those a timed-out attempt may be."""
    return _lines_with_ours(channel_id, account).where(in_window, LINES.c.operation != DISPUTE,
                                                       Attempt.id.is_(None))


# What a statement line's ``operation`` can be of ours (contract §4 names payment, capture, refund,
# payout, void and dispute; the sandbox also writes topup and withdrawal): money in (a payment or a
# top-up, captured or voided), money back (a refund), money out (a payout). A line is matched only
# to an operation of its family, so a refund a channel lists under a payment's reference is never
# taken for that payment; an operation named nowhere here (a dispute) is a family of its own.
LINE_FAMILIES = {"in": ("payment", "capture", "void", "topup"), "back": ("refund",), "out": ("payout", "withdrawal")}
KIND_FAMILIES = {"in": ("payment", "topup"), "back": ("refund",), "out": ("withdrawal",)}


def _family(column, families: dict[str, tuple[str, ...]]):
    return case(*((column.in_(names), family) for family, names in families.items()), else_=column)


def _same_family():
    return _family(LINES.c.operation, LINE_FAMILIES) == _family(Operation.kind, KIND_FAMILIES)


def _line_family(operation: str) -> str:
    return next((family for family, names in LINE_FAMILIES.items() if operation in names), operation)


def _lines_with_ours(channel_id: str, account: str | None = None):
    """Staged lines, each outer-joined to our attempt on this channel (made with this account's
    credentials) with its reference and that attempt's operation, of the line's family: the
    columns ``_theirs`` and ``_ours`` read."""
    ours = join(Attempt, Operation, Operation.id == Attempt.operation_id)
    return (select(LINES.c.channel_reference, LINES.c.operation, LINES.c.amount, LINES.c.currency, LINES.c.status,
                   LINES.c.fee, Attempt.id.label("attempt_id"), Attempt.status.label("attempt_status"),
                   Attempt.channel.label("attempt_channel"), Operation.id.label("op_id"),
                   Operation.status.label("op_status"), SETTLED_AMOUNT.label("op_amount"),
                   Operation.currency.label("op_currency"), Operation.channel.label("op_channel"),
                   Operation.channel_reference.label("op_reference"))
            .select_from(LINES.outerjoin(ours, and_(Attempt.channel == channel_id,
                                                    Attempt.channel_reference == LINES.c.channel_reference,
                                                    _of_account(Attempt.channel_account_id, account),
                                                    _same_family()))))


def _theirs(row) -> SimpleNamespace:
    return SimpleNamespace(operation=row.operation, amount=row.amount, currency=row.currency, status=row.status,
                           fee=row.fee)


def _ours(row) -> tuple[SimpleNamespace, SimpleNamespace]:
    """The (attempt, operation) pair ``_line_issues`` reads, from a row of ``_disagreeing``."""
    return (SimpleNamespace(channel=row.attempt_channel, status=row.attempt_status,
                            channel_reference=row.channel_reference),
            SimpleNamespace(id=row.op_id, status=row.op_status, amount=row.op_amount, currency=row.op_currency,
                            channel=row.op_channel, channel_reference=row.op_reference))


def _missing_at_channel(channel_id: str, statement: _Statements, start: dt.datetime, end: dt.datetime,
                        account: str | None = None) -> tuple:
    """Outcomes of ours in the window (final, with the channel's reference) and disputes we recorded
    in it, of this account, that no staged line lists: two anti-joins, returned as queries (of the
    reference, ``id``, ``status``, ``amount``, ``currency``) that the run streams. First the
    earliest creation among them (a dispute: its payment's) says which earlier statements they may
    be on: those are staged (no session open meanwhile), and the anti-joins read them too."""
    staged = LINES.c.load_id.in_(statement.load_ids)
    ours = (select(Attempt.channel_reference, Operation.id, Operation.kind, Operation.status,
                   SETTLED_AMOUNT.label("amount"), Operation.currency, Operation.created_at)
            .join(Operation, Operation.id == Attempt.operation_id)
            .where(Attempt.channel == channel_id, Attempt.status.in_(sorted(FINAL)),
                   _of_account(Attempt.channel_account_id, account),
                   Attempt.channel_reference.is_not(None), Attempt.updated_at >= start, Attempt.updated_at < end,
                   ~exists().where(staged, LINES.c.channel_reference == Attempt.channel_reference,
                                   _same_family())))
    disputes = (select(Dispute.channel_reference, Dispute.id, literal(DISPUTE).label("kind"), Dispute.status,
                       Dispute.amount, Dispute.currency, Operation.created_at)
                .join(Operation, Operation.id == Dispute.payment_id)
                .where(Dispute.channel == channel_id, _of_account(Dispute.channel_account_id, account),
                       Dispute.created_at >= start, Dispute.created_at < end,
                       ~exists().where(staged, LINES.c.channel_reference == Dispute.channel_reference,
                                       LINES.c.operation == DISPUTE)))
    with read_only() as session:
        earliest = [session.scalar(select(func.min(rows.c.created_at)))
                    for rows in (ours.subquery(), disputes.subquery())]
    earliest = [created for created in earliest if created is not None]
    if earliest:
        statement.reach_back(min(earliest))
    return ours, disputes


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


def _fee_issues(adapter, ref: str, line, op=None) -> list[dict]:
    """The channel's fee on a line against its configured ``cost`` (channels.config.Cost): what it
    should charge on a succeeded line's amount, nothing on any other."""
    expected = adapter.cost.fee(line.amount) if line.status == SUCCEEDED else 0
    if line.fee == expected:
        return []
    issue = _issue("fee_mismatch", ref, op, line)
    issue["expected_fee"] = expected
    return [issue]


def _unanswered_candidates(session, channel_id: str, account: str | None = None, limit: int = 200) -> list:
    """Attempts (made with this account's credentials) that never learned the channel's reference
    (a timeout), oldest first."""
    return session.execute(
        select(Attempt, Operation).join(Operation, Operation.id == Attempt.operation_id)
        .where(Attempt.channel == channel_id, _of_account(Attempt.channel_account_id, account),
               Attempt.channel_reference.is_(None), Operation.status == PROCESSING)
        .order_by(Attempt.created_at).limit(limit)).all()


def _ask_by_reference(adapter, candidates: list, unmatched, references: int) -> dict:
    """Ask the channel about each candidate by our reference (no transaction open meanwhile), to
    match them to ``unmatched`` statement lines (a query, ``_unmatched_lines``, of ``references``
    references: each answer is looked up there, in a short read-only session); stops once each is
    found, or after PASS_BUDGET_SECONDS."""
    found, deadline = {}, time.monotonic() + PASS_BUDGET_SECONDS
    for attempt, op in candidates:
        if len(found) >= references or time.monotonic() > deadline:
            break
        try:
            answer = ask(adapter, "query", op.id)
        except ChannelError:
            continue
        reference = answer.channel_reference
        if reference and reference not in found:
            with read_only() as session:
                if session.scalar(select(exists(unmatched.where(LINES.c.channel_reference == reference)))):
                    found[reference] = (attempt, op)
    return found


def _issue(kind: str, reference: str, op=None, theirs=None) -> dict:
    issue = {"issue": kind, "channel_reference": reference}
    if op is not None:
        issue["ours"] = {"id": op.id, "status": op.status, "amount": op.amount, "currency": op.currency}
    if theirs is not None:
        issue["theirs"] = {"operation": theirs.operation, "status": theirs.status, "amount": theirs.amount,
                           "currency": theirs.currency, "fee": theirs.fee}
    return issue


def summary(run: ReconciliationRun, statuses: dict[str, str] | None = None) -> dict:
    """A run as shown to operators: how many issues it found (``issue_count``), the first
    ISSUE_SAMPLE of them (``issues``; all of them for most runs, ``issues_truncated`` otherwise:
    ``reconcile export`` and GET /ops/reconciliation/issues?run= list the rest), each with its id
    and its status now (``statuses``: the issues' statuses if already read), and how many of the
    run's issues are still open."""
    from app.services.representation import rfc3339

    if statuses is None:
        statuses = issue_store.statuses([issue["id"] for issue in run.issues if "id" in issue])
    # Runs stored before issues had rows of their own carry no id: open, as they were reported.
    shown = [{**issue, "status": statuses.get(issue.get("id"), issue_store.OPEN)} for issue in run.issues]
    count = max(run.issue_count or 0, len(shown))
    open_issues = sum(issue["status"] == issue_store.OPEN for issue in shown)
    if count > len(shown):
        open_issues += issue_store.open_of_run(run.id, [issue["id"] for issue in shown if "id" in issue])
    return {"id": run.id, "channel": run.channel, "channel_account": run.channel_account, "mode": run.mode,
            "date": run.day,
            "window_start": rfc3339(run.window_start), "window_end": rfc3339(run.window_end),
            "statement_lines": run.statement_lines, "matched": run.matched, "channel_fees": run.channel_fees,
            "issue_count": count, "open_issues": open_issues, "summary": run.summary,
            "issues": shown, "issues_truncated": count > len(shown)}


CSV_COLUMNS = ("id", "status", "issue", "channel_reference", "ours_id", "ours_status", "ours_amount", "ours_currency",
               "theirs_operation", "theirs_status", "theirs_amount", "theirs_currency", "theirs_fee", "expected_fee")


def export_csv(run_id: str, out) -> None:
    """Write a run's issues as CSV to ``out`` (``csv_chunks``)."""
    for chunk in csv_chunks(run_id):
        out.write(chunk)


def csv_chunks(run_id: str, size: int = 64 * 1024):
    """A run's issues as CSV (``CSV_COLUMNS``, each issue's status now), in pieces of about ``size``
    characters, streamed: the run's sample (its first ISSUE_SAMPLE issues, as found), then the rest
    of the issues it found (first, or again after an earlier pass), streamed from their rows (past
    the sample, a fee issue's expected fee is the channel's cost now).
    NotFound at once for an unknown run."""
    with read_only() as session:
        run = session.get(ReconciliationRun, run_id)
        if run is None:
            raise NotFound(f"No such reconciliation run: '{run_id}'", param="run")
        session.expunge(run)
    return _csv_pieces(_issues_of(run), size)


def _issues_of(run: ReconciliationRun):
    shown = summary(run)
    yield from shown["issues"]
    if shown["issues_truncated"]:
        cost = _cost_now(run.channel, run.channel_account)
        sampled = {issue["id"] for issue in shown["issues"] if "id" in issue}
        for page in issue_store.pages_of_run(run.id, run.channel):
            for issue in page:
                if issue["id"] in sampled:
                    continue
                theirs = issue.get("theirs") or {}
                if issue["issue"] == "fee_mismatch" and cost is not None and theirs.get("amount") is not None:
                    issue["expected_fee"] = cost.fee(theirs["amount"]) if theirs.get("status") == SUCCEEDED else 0
                yield issue


def _csv_pieces(issues, size: int):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for issue in issues:
        _write_issue(writer, issue)
        if buffer.tell() >= size:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _write_issue(writer, issue: dict) -> None:
    ours, theirs = issue.get("ours") or {}, issue.get("theirs") or {}
    writer.writerow([_cell(value) for value in (
        issue.get("id"), issue["status"], issue["issue"], issue["channel_reference"], ours.get("id"),
        ours.get("status"), ours.get("amount"), ours.get("currency"), theirs.get("operation"),
        theirs.get("status"), theirs.get("amount"), theirs.get("currency"), theirs.get("fee"),
        issue.get("expected_fee"))])


def _cost_now(channel_id: str, account: str | None):
    """The channel's cost as configured now (None: the channel is gone)."""
    try:
        return _adapter(channel_id, account).cost
    except (InvalidRequest, NotFound, KeyError):
        return None


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    """A CSV cell that a spreadsheet shows as written: text a channel wrote (a reference, a status)
    that would start a formula (``=HYPERLINK(…)``, ``+``, ``-``, ``@``, a tab or CR first) gets a
    leading apostrophe, as OWASP advises against CSV injection; numbers stay numbers."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def recent_runs(channel_id: str | None = None, limit: int = 20, with_issues: bool = False,
                starting_after: str | None = None) -> tuple[list[dict], bool]:
    """The newest runs first, a page of at most ``limit`` (app.services.search.keyset_page, as the
    console's), and whether more follow; ``with_issues``: only runs that found something;
    ``starting_after``: a run id, the page after it (the API's cursor)."""
    query = select(ReconciliationRun)
    if channel_id:
        query = query.where(ReconciliationRun.channel == channel_id)
    if with_issues:
        query = query.where(ReconciliationRun.issue_count > 0)
    with read_only() as session:
        after = None if starting_after is None else cursor_after(session, ReconciliationRun, starting_after,
                                                                 "reconciliation run")
        runs, cursor = keyset_page(session, query, ReconciliationRun, limit, after)
        statuses = issue_store.statuses([issue["id"] for run in runs for issue in run.issues if "id" in issue])
        return [summary(run, statuses) for run in runs], cursor is not None
