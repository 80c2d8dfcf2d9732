"""The console's "Dashboard": per channel, volume and success rate hour by hour over the last 24 h
(the rate leaves out what says nothing of the channel: app.domain.channel_outcomes);
declines by code; the webhook backlog; open reconciliation issues. Aggregates in SQL over the
24-hour window of ix_operations_created, and over the small indexed sets of pending deliveries
and open issues."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func, literal_column, select

from app.adapters.db import read_only
from app.adapters.models import Operation, ReconciliationIssue, utcnow
from app.adapters.webhook_models import FAILED, PENDING, SENDING, WebhookDelivery
from app.domain.channel_outcomes import says_nothing_of_the_channel

HOURS = 24
# An operation that failed saying nothing of its channel (app.domain.channel_outcomes): in its volume,
# not in its success rate.
NOT_THE_CHANNELS_KEY = "not_the_channels"


def _hour(session):
    """The hour a row was created in, as text the same on both backends (``YYYY-MM-DD HH``)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(Operation.created_at, literal_column("'YYYY-MM-DD HH24'"))
    return func.strftime("%Y-%m-%d %H", Operation.created_at)


def data(now: datetime | None = None) -> dict:
    now = now or utcnow()
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    hours = [(start + timedelta(hours=i)).strftime("%Y-%m-%d %H") for i in range(HOURS)]
    with read_only() as session:
        hour = _hour(session)
        rows = [(channel, at, outcome_of(status, code), count) for channel, at, status, code, count in session.execute(
            select(Operation.channel, hour, Operation.status, Operation.failure_code, func.count())
            .where(Operation.created_at >= start, Operation.channel.is_not(None))
            .group_by(Operation.channel, hour, Operation.status, Operation.failure_code)).all()]
        declines = session.execute(
            select(Operation.failure_code, func.count())
            .where(Operation.created_at >= start, Operation.status == "failed")
            .group_by(Operation.failure_code).order_by(func.count().desc())).all()
        backlog = dict(session.execute(
            select(WebhookDelivery.status, func.count()).where(WebhookDelivery.status.in_((PENDING, SENDING)))
            .group_by(WebhookDelivery.status)).all())
        oldest = session.scalar(select(func.min(WebhookDelivery.next_attempt_at))
                                .where(WebhookDelivery.status == PENDING))
        failed = session.scalar(select(func.count()).select_from(WebhookDelivery).where(
            WebhookDelivery.status == FAILED, WebhookDelivery.created_at >= start))
        issues = session.execute(
            select(ReconciliationIssue.channel, ReconciliationIssue.kind, func.count())
            .where(ReconciliationIssue.status == "open")
            .group_by(ReconciliationIssue.channel, ReconciliationIssue.kind)).all()
    return {"hours": hours, "channels": _channels(rows, hours),
            "declines": [{"code": code or "unknown", "count": count} for code, count in declines],
            "webhooks": {"pending": backlog.get(PENDING, 0), "sending": backlog.get(SENDING, 0),
                         "failed_24h": failed or 0,
                         "oldest_pending_seconds": int((now - oldest).total_seconds()) if oldest else None},
            "issues": [{"channel": channel, "kind": kind, "count": count} for channel, kind, count in issues],
            "open_issues": sum(count for _, _, count in issues)}


def outcome_of(status: str, failure_code: str | None) -> str:
    """An operation's status as the channel's success rate reads it."""
    return NOT_THE_CHANNELS_KEY if says_nothing_of_the_channel(status, failure_code) else status


def _channels(rows, hours: list[str]) -> list[dict]:
    """Per channel: per hour the operations created, succeeded and failed, and the 24-h totals
    (success rate over the final ones: processing ones have no outcome yet, and one that failed
    saying nothing of the channel, a merchant's own key refused, is not the channel's failure)."""
    counts = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for channel, hour, status, count in rows:
        counts[channel][hour][status] += count
    out = []
    for channel in sorted(counts):
        per_hour = counts[channel]
        volume = [sum(per_hour[h].values()) for h in hours]
        succeeded = [per_hour[h]["succeeded"] for h in hours]
        failed = [per_hour[h]["failed"] for h in hours]
        rate = [round(100 * s / (s + f), 1) if s + f else None for s, f in zip(succeeded, failed, strict=True)]
        total_s, total_f = sum(succeeded), sum(failed)
        out.append({"channel": channel, "volume": volume, "succeeded": succeeded, "failed": failed,
                    "success_rate": rate, "total": sum(volume),
                    "total_success_rate": round(100 * total_s / (total_s + total_f), 1) if total_s + total_f else None})
    return out
