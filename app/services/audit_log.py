"""Reading the audit log (the console's "Audit log" page): newest first, filtered by user, object,
action and date, paged by id."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import select

from app.adapters.db import read_only
from app.adapters.models import AuditLog

PAGE = 50


@dataclass(frozen=True)
class Filters:
    actor: str | None = None
    target: str | None = None  # exact, or a prefix when it ends with "*" (e.g. "channel:*")
    action: str | None = None
    since: date | None = None  # inclusive (UTC days)
    until: date | None = None  # inclusive


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def changed_keys(before, after) -> list[str]:
    """The top-level fields an entry changed (both sides objects), for highlighting."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def search(filters: Filters, before_id: int | None = None, limit: int = PAGE) -> tuple[list[AuditLog], int | None]:
    """One page of entries and the id to pass as ``before_id`` for the next (older) page, or None."""
    query = select(AuditLog)
    if filters.actor:
        query = query.where(AuditLog.actor == filters.actor)
    if filters.target:
        if filters.target.endswith("*"):
            query = query.where(AuditLog.target.like(_like_prefix(filters.target[:-1]), escape="\\"))
        else:
            query = query.where(AuditLog.target == filters.target)
    if filters.action:
        query = query.where(AuditLog.action == filters.action)
    if filters.since:
        query = query.where(AuditLog.created_at >= datetime.combine(filters.since, time.min))
    if filters.until and filters.until < date.max:  # up to 9999-12-31: no bound (the day after is no date)
        query = query.where(AuditLog.created_at < datetime.combine(filters.until + timedelta(days=1), time.min))
    if before_id is not None:
        query = query.where(AuditLog.id < before_id)
    query = query.order_by(AuditLog.id.desc()).limit(limit + 1)
    with read_only() as session:
        rows = list(session.scalars(query))
        session.expunge_all()  # kept as read: read_only() rolls back (expiring them) on the way out
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def actors() -> list[str]:
    """Every user name that appears in the log (the filter's choices), at most 500."""
    with read_only() as session:
        return list(session.scalars(select(AuditLog.actor).distinct().order_by(AuditLog.actor).limit(500)))
