"""Reconciliation for operators (the console's "Reconciliation" page): runs and issues newest first
(keyset pages: app.services.search.keyset_page), and "Resolve" with a note, which is
app.services.issues.resolve (audited there)."""
from __future__ import annotations

from sqlalchemy import select

from app.adapters.db import read_only
from app.adapters.models import ReconciliationIssue, ReconciliationRun
from app.domain.errors import InvalidRequest
from app.services import issues
from app.services.representation import rfc3339
from app.services.search import cursor_after, keyset_page

ISSUE_STATUSES = (issues.OPEN, issues.RESOLVED)


def runs(channel: str | None = None, with_issues: bool = False, limit: int = 50,
         after: str | None = None) -> tuple[list[dict], str | None]:
    """Runs newest first (their issues counted, not listed: the issues list shows them)."""
    query = select(ReconciliationRun)
    if channel:
        query = query.where(ReconciliationRun.channel == channel)
    if with_issues:
        query = query.where(ReconciliationRun.issue_count > 0)
    with read_only() as session:
        rows, cursor = keyset_page(session, query, ReconciliationRun, limit, after)
        return [{"id": r.id, "channel": r.channel, "channel_account": r.channel_account, "mode": r.mode,
                 "date": r.day,
                 "window_start": rfc3339(r.window_start), "window_end": rfc3339(r.window_end),
                 "statement_lines": r.statement_lines, "matched": r.matched, "issue_count": r.issue_count,
                 "channel_fees": r.channel_fees, "channel_fees_by_currency": _fees_by_currency(r),
                 "created_at": rfc3339(r.created_at)} for r in rows], cursor


def _fees_by_currency(run: ReconciliationRun) -> dict[str, int]:
    """The statement's fees per currency, as the run summed them (``channel_fees`` adds currencies up)."""
    theirs = (run.summary or {}).get("theirs") or {}
    return {currency: sums["fee"] for currency, sums in sorted(theirs.items()) if sums.get("fee") is not None}


def issue_list(status: str | None = issues.OPEN, channel: str | None = None, limit: int = 50,
               after: str | None = None, kind: str | None = None,
               run: str | None = None, starting_after: str | None = None) -> tuple[list[dict], str | None]:
    """Issues newest first: the open ones by default (``status`` None: all); ``kind``: of one class
    (issues.KINDS); ``run``: found by that run; ``starting_after``: an issue id (the API's pages),
    ``after``: the console's cursor."""
    if status is not None and status not in ISSUE_STATUSES:  # an empty one too: it is no filter by mistake
        raise InvalidRequest(f"status is one of {', '.join(ISSUE_STATUSES)}", param="status")
    if kind is not None and kind not in issues.KINDS:
        raise InvalidRequest(f"kind is one of {', '.join(issues.KINDS)}", param="kind")
    query = select(ReconciliationIssue)
    if kind:
        query = query.where(ReconciliationIssue.kind == kind)
    if run:
        query = query.where(ReconciliationIssue.run_id == run)
    if status:
        query = query.where(ReconciliationIssue.status == status)
    if channel:
        query = query.where(ReconciliationIssue.channel == channel)
    with read_only() as session:
        if starting_after:
            after = cursor_after(session, ReconciliationIssue, starting_after, "reconciliation issue")
        rows, cursor = keyset_page(session, query, ReconciliationIssue, limit, after)
        return [issues.view(issue) for issue in rows], cursor


def resolve(issue_id: str, note: str, actor: str) -> dict:
    """Resolve an open issue with a note (required): who, when, why; audited."""
    return issues.resolve(issue_id, note, actor)
