"""Publishing rule sets from the workspace: a required reason, a confirmation when live rules are
dropped, optional four-eyes approval (``PAYROUTER_RULES_APPROVAL=1``), history with the diff to the
previous version, rollback. Every change is written to the audit log in the same transaction.

The version store itself (versions, publications, the announcement every process obeys within
about half a second) is ``app.services.rules_store``; this module adds the workspace's rules around it.
"""
from __future__ import annotations

import functools
import hashlib

from sqlalchemy import select

from app.adapters.db import read_only, unit_of_work
from app.adapters.models import RulesetRequest, RulesetVersion, utcnow
from app.config import get_config
from app.domain.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from app.services import rules_store as store
from app.services.audit import record
from app.services.rules_workspace import checked, dropped_rules, owner
from rules import diff as diff_mod
from rules import format

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


@functools.lru_cache(maxsize=512)
def _data(source: str):
    """A stored version's plain data (versions never change: the history page parses each once)."""
    return format.data_of(source)


class DropsLiveRules(Conflict):
    """The rule set drops rules of the live set; publish again confirming it (``--yes``)."""

    code = "rules_dropped"


class SelfApproval(PermissionDenied):
    """The author of a rule set cannot approve it: another pm or admin must."""

    code = "four_eyes_required"


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidRequest("a reason is required", param="reason", code="reason_required")
    if len(reason) > 1000:
        raise InvalidRequest("the reason is longer than 1000 characters", param="reason")
    return reason


def audit(session, actor: str, action: str, target: str, before, after, reason: str | None) -> None:
    record(session, actor=actor, action=action, target=target, before=before, after=after, reason=reason)


def _guard_drops(source: str, merchant: str | None, confirm_dropped: bool) -> list[str]:
    dropped = dropped_rules(source, merchant)
    if dropped and not confirm_dropped:
        raise DropsLiveRules(f"this rule set drops {len(dropped)} live rule(s): {', '.join(dropped)}; "
                             "confirm to publish it anyway", param="confirm_dropped", dropped=dropped)
    return dropped


def publish(source: str, actor: str, reason: str | None, *, confirm_dropped: bool = False,
            merchant: str | None = None, approval: bool | None = None) -> dict:
    """Publish a draft: ``{"status": "published", "version"}``; or, with approval required,
    ``{"status": "pending", "request"}`` awaiting another pm/admin. Raises ``DropsLiveRules`` when the
    draft drops live rules and ``confirm_dropped`` is not set. ``merchant``: the draft is that merchant's
    own set."""
    merchant = owner(merchant)
    reason = _reason(reason)
    if not actor:
        raise InvalidRequest("actor is required", param="actor")
    checked(source, merchant)  # every problem before anything else
    dropped = _guard_drops(source, merchant, confirm_dropped)
    approval = get_config().rules_approval if approval is None else approval
    if approval:
        with unit_of_work() as session:
            request = RulesetRequest(merchant_id=merchant, source=source, author=actor, reason=reason,
                                     checksum=hashlib.sha256(source.encode()).hexdigest(), dropped=dropped,
                                     status=PENDING, created_at=utcnow())
            session.add(request)
            session.flush()
            audit(session, actor, "rules.request", f"rules_request:{request.id}", None,
                  {"status": PENDING, "dropped": dropped, "checksum": request.checksum[:12]}, reason)
            number = request.id
        return {"status": PENDING, "request": number, "dropped": dropped}
    with unit_of_work() as session:
        before = store.live_version(session, merchant)
        version = store.publish(session, source, actor, reason, merchant=merchant)
        audit(session, actor, "rules.publish", target(merchant), {"version": before},
              {"version": version, "dropped": dropped}, reason)
    store.announce(version, merchant=merchant)
    return {"status": "published", "version": version, "dropped": dropped, "merchant": merchant}


def target(merchant: str | None) -> str:
    """The audit log's name for a rule set."""
    return f"rules:{merchant or 'platform'}"


def _request(session, request_id: int) -> RulesetRequest:
    request = session.get(RulesetRequest, request_id, with_for_update=True)
    if request is None:
        raise NotFound(f"No such rule-set request: {request_id}", param="request")
    if request.status != PENDING:
        raise Conflict(f"request {request_id} is already {request.status}", param="request")
    return request


def approve(request_id: int, actor: str) -> dict:
    """A second person makes a pending request live (its author cannot)."""
    with unit_of_work() as session:
        request = _request(session, request_id)
        if actor == request.author:
            raise SelfApproval(f"{actor} wrote request {request_id}; another pm or admin must approve it")
        dropped = dropped_rules(request.source, request.merchant_id)
        unconfirmed = sorted(set(dropped) - set(request.dropped or []))
        if unconfirmed:  # the live set changed since the request: its author confirmed other drops
            raise DropsLiveRules(f"the live set changed since request {request_id}: it would now also drop "
                                 f"{', '.join(unconfirmed)}; submit it again", dropped=unconfirmed)
        merchant = request.merchant_id
        before = store.live_version(session, merchant)
        version = store.publish(session, request.source, request.author, request.reason, approved_by=actor,
                                merchant=merchant)
        request.status, request.decided_by, request.decided_at, request.version = APPROVED, actor, utcnow(), version
        audit(session, actor, "rules.approve", f"rules_request:{request_id}", {"status": PENDING, "version": before},
              {"status": APPROVED, "version": version, "author": request.author, "rules": target(merchant)},
              request.reason)
    store.announce(version, merchant=merchant)
    return {"status": "published", "version": version, "request": request_id, "merchant": merchant,
            "source": request.source}


def reject(request_id: int, actor: str, note: str | None = None) -> dict:
    """Turn a pending request down (its author may withdraw it the same way)."""
    with unit_of_work() as session:
        request = _request(session, request_id)
        request.status, request.decided_by, request.decided_at, request.note = REJECTED, actor, utcnow(), note
        audit(session, actor, "rules.reject", f"rules_request:{request_id}", {"status": PENDING},
              {"status": REJECTED}, note)
    return {"status": REJECTED, "request": request_id}


def pending(merchant: str | None = None) -> list[dict]:
    """Requests for this owner's set awaiting approval, oldest first, each with its diff to the live set."""
    merchant = owner(merchant)
    mine = RulesetRequest.merchant_id.is_(None) if merchant is None else RulesetRequest.merchant_id == merchant
    with read_only() as session:
        live = store.live_version(session, merchant)
        before = _data(store.source_of(session, live, merchant)) if live is not None else None
        rows = [{"request": r.id, "author": r.author, "reason": r.reason, "at": r.created_at.isoformat() + "Z",
                 "dropped": r.dropped or [], "source": r.source, "merchant": r.merchant_id}
                for r in session.scalars(select(RulesetRequest).where(RulesetRequest.status == PENDING, mine)
                                         .order_by(RulesetRequest.id))]
    return [{**row, "diff": diff_mod.diff(before, _data(row["source"]))} for row in rows]


def rollback(version: int, actor: str, reason: str | None, merchant: str | None = None) -> dict:
    """Make an earlier version of the same owner's live again (the undo: no approval needed), with a
    reason; checked as a publish of its text (refused if it names a channel no longer stored). The
    answer carries the version's ``source``, for the warning a publish gives (``channels_not_run``)."""
    merchant = owner(merchant)
    reason = _reason(reason)
    with unit_of_work() as session:
        before = store.live_version(session, merchant)
        source = store.rollback(session, version, actor, reason, merchant)
        audit(session, actor, "rules.rollback", target(merchant), {"version": before}, {"version": version}, reason)
    store.announce(version, merchant=merchant)
    return {"status": "published", "version": version, "merchant": merchant, "source": source}


def history(merchant: str | None = None, limit: int = 50) -> list[dict]:
    """Publications, newest first: who, when, reason, who approved, and the diff to the version live
    before it."""
    merchant = owner(merchant)
    with read_only() as session:
        rows = list(reversed(store.history(session, merchant)[:limit + 1]))
        wanted = {r["version"] for r in rows}
        sources = dict(session.execute(select(RulesetVersion.version, RulesetVersion.source)
                                       .where(RulesetVersion.version.in_(wanted))).all()) if wanted else {}
    data = {v: _data(text) for v, text in sources.items()}
    out, previous = [], None
    for row in rows:
        change = diff_mod.diff(data[previous] if previous is not None else None, data[row["version"]])
        out.append({**row, "previous": previous, "diff": change, "diff_text": diff_mod.render(change)})
        previous = row["version"]
    out.reverse()
    return out[:limit]


def channels_not_run(source: str) -> dict[str, list[str]] | None:
    """The stored channels ``source`` names that some live process runs without (it could not build
    them, app.adapters.channels_runtime), each with those processes (``role host pid``): a rule on
    one is accepted (the channel is stored) but those processes drop it from routing as an unknown
    channel. None when the processes' build reports cannot be read (Redis)."""
    import redis

    from app.adapters import channel_builds

    try:
        reports = channel_builds.live()
    except redis.RedisError:
        return None
    lacking: dict[str, list[str]] = {}
    for report in reports:
        for channel_id in report.unbuilt:
            lacking.setdefault(channel_id, []).append(f"{report.role} {report.host} pid {report.pid}")
    stored = store.known_channels() or set()
    # a channel the set names is one without which it no longer validates
    return {channel_id: who for channel_id, who in sorted(lacking.items())
            if channel_id in stored and format.validate(source, stored - {channel_id})}


def channels_not_run_words(source: str) -> list[str] | None:
    """``channels_not_run`` in words, one sentence a channel, as the CLI's ``rules publish`` and the
    console's Rules page say them (None: the build reports could not be read)."""
    lacking = channels_not_run(source)
    if lacking is None:
        return None
    return [f"{channel_id} is stored but not run by {len(processes)} live process(es) ({'; '.join(processes)}): "
            "they could not build it and drop it from routing as unknown_channel"
            for channel_id, processes in lacking.items()]
