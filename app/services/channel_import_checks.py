"""What an import of channel definitions would do to merchants' live work (contract §4), checked
inside the import's transaction, on the rows it locked (app.services.channel_import):

- ``--prune`` removing a channel that still carries operations not final (a payment
  ``processing``, ``requires_action`` or ``requires_capture``, a refund or payout ``processing``)
  or open disputes (``needs_response``: the network's ruling comes by the channel's callback) or
  live merchant channel accounts (``mca_…``): nothing would query, capture, cancel or reconcile
  those operations any more, a ruling would be answered 404 (a won dispute never reversed), and
  the merchants' credentials would be orphaned. Refused unless forced (``--force``), and then
  audited with what it stranded.
- a changed definition whose ``base_url`` moves to another host (scheme, host or port) while
  merchants' channel accounts are live on it: their stored credentials would be sent to the new
  host. Refused unless confirmed (``--allow-host-change``); every host change is shown and audited.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.adapters.models import ChannelAccount, Dispute, Operation
from app.domain import states
from app.domain.disputes import NEEDS_RESPONSE
from app.domain.errors import Conflict

NOT_FINAL = (states.PENDING, *sorted(states.OPEN))
PRUNE_REFUSED, HOST_CHANGE_REFUSED = "channel_in_flight", "channel_host_change"


def origin(base_url: object) -> str | None:
    """``scheme://host[:port]`` of a URL (no path, no user info: never a credential), or None."""
    if not isinstance(base_url, str) or not base_url:
        return None
    try:
        parts = urlsplit(base_url.strip())
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return base_url
    if not parts.scheme or not parts.hostname:
        return base_url  # an unexpanded ${VAR}: compared as written
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}{port}"


@dataclass
class Stranded:
    """One channel a prune would remove, with what is still live on it."""

    channel: str
    operations: dict[str, int] = field(default_factory=dict)  # "payment requires_capture": count
    disputes: int = 0  # open (needs_response): their ruling comes by this channel's callback
    accounts: int = 0

    @property
    def any(self) -> bool:
        return bool(self.operations or self.disputes or self.accounts)

    def words(self) -> str:
        said = [f"{count} {what}" for what, count in sorted(self.operations.items())]
        if self.disputes:
            said.append(f"{self.disputes} open dispute(s)")
        if self.accounts:
            said.append(f"{self.accounts} live merchant channel account(s)")
        return f"{self.channel} ({', '.join(said)})"

    def to_dict(self) -> dict:
        return {"channel": self.channel, "operations": dict(sorted(self.operations.items())),
                "open_operations": sum(self.operations.values()), "open_disputes": self.disputes,
                "live_accounts": self.accounts}


@dataclass(frozen=True)
class HostChange:
    channel: str
    before: str | None
    after: str | None
    accounts: int

    def words(self) -> str:
        return (f"{self.channel}: {self.before} -> {self.after}"
                + (f" ({self.accounts} live merchant channel account(s) would send their credentials there)"
                   if self.accounts else ""))

    def to_dict(self) -> dict:
        return {"channel": self.channel, "from": self.before, "to": self.after, "live_accounts": self.accounts}


def live_accounts(session: Session, channel_ids: list[str]) -> dict[str, int]:
    if not channel_ids:
        return {}
    return dict(session.execute(select(ChannelAccount.channel, func.count()).where(
        ChannelAccount.channel.in_(channel_ids), ChannelAccount.deleted_at.is_(None))
        .group_by(ChannelAccount.channel)).all())


def stranded(session: Session, removed: list[str]) -> list[Stranded]:
    """What is still live on each channel in ``removed`` (those with nothing live left out)."""
    if not removed:
        return []
    found = {cid: Stranded(cid) for cid in removed}
    for cid, kind, status, count in session.execute(
            select(Operation.channel, Operation.kind, Operation.status, func.count())
            .where(Operation.status.in_(NOT_FINAL), Operation.channel.in_(removed))
            .group_by(Operation.channel, Operation.kind, Operation.status)):
        found[cid].operations[f"{kind} {status}"] = count
    for cid, count in session.execute(select(Dispute.channel, func.count()).where(
            Dispute.status == NEEDS_RESPONSE, Dispute.channel.in_(removed)).group_by(Dispute.channel)):
        found[cid].disputes = count
    for cid, count in live_accounts(session, removed).items():
        found[cid].accounts = count
    return [item for item in found.values() if item.any]


def host_changes(session: Session, before: dict[str, str], after: dict[str, str], changed: list[str],
                 expand) -> list[HostChange]:
    """Each changed channel whose ``config.base_url`` names another origin than before. ``before`` and
    ``after``: canonical JSON definitions by id; ``expand(definition) -> base_url``: as this process
    reads it (its ``${VAR}``s expanded; the text as written if it cannot)."""
    moved = []
    for cid in changed:
        if cid not in before:
            continue
        old, new = origin(expand(json.loads(before[cid]))), origin(expand(json.loads(after[cid])))
        if old != new:
            moved.append((cid, old, new))
    counts = live_accounts(session, [cid for cid, _, _ in moved])
    return [HostChange(cid, old, new, counts.get(cid, 0)) for cid, old, new in moved]


def refuse(stranding: list[Stranded], moving: list[HostChange], *, force: bool, allow_host_change: bool) -> None:
    """Raise Conflict (nothing is stored) for what was not explicitly allowed: code
    ``channel_in_flight`` if a prune strands live work, else ``channel_host_change``."""
    problems, code = [], None
    if stranding and not force:
        code = PRUNE_REFUSED
        problems.append("--prune would remove channel(s) still carrying live work: "
                        + "; ".join(item.words() for item in stranding)
                        + ". Nothing would query, capture, cancel or reconcile those operations, a dispute's ruling "
                          "would be refused (a won dispute never reversed), and the accounts' credentials would be "
                          "orphaned: settle them (or delete the accounts) first, or give --force "
                          "(audited)")
    risky = [change for change in moving if change.accounts]
    if risky and not allow_host_change:
        code = code or HOST_CHANGE_REFUSED
        problems.append("the import moves channel(s) with live merchant channel accounts to another host: "
                        + "; ".join(change.words() for change in risky)
                        + ". Give --allow-host-change (audited) if that host is the same PSP")
    if problems:
        raise Conflict(". Also, ".join(problems) + ". Nothing was stored.", param="channels", code=code)
