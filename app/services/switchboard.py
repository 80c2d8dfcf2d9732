"""Degradation switches in words, for the "Switches" page and the CLI alike (contract §5).

A switch is stored as ``on`` = degraded (app.services.switches); operators read and act in outcomes:
"Channel acq_alpha: disabled since 2026-12-06 07:30:12 UTC, by alice, because acquirer outage",
and Disable/Enable, Pause/Resume, read-only on/off, each with a required reason. ``board`` lists
every switch there is (never-set ones read as their normal state), ``history`` every change.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from app.adapters.db import read_only
from app.adapters.models import AuditLog
from app.domain.errors import InvalidRequest
from app.domain.kinds import OperationKind
from app.services import switches

REASON_MAX = 1000
AUDIT_ACTION = "switch.set"

# kind → (normal state, degraded state, verb to degrade, verb to restore, past tense of each)
_WORDS = {
    "channel": ("enabled", "disabled", "Disable", "Enable", "disabled", "enabled"),
    "operation": ("running", "paused", "Pause", "Resume", "paused", "resumed"),
    "webhooks": ("running", "paused", "Pause", "Resume", "paused", "resumed"),
    "read_only": ("off", "on", "Turn on", "Turn off", "turned on", "turned off"),
}


def kind_of(name: str) -> str:
    return name.split(":", 1)[0]


def subject(name: str) -> str:
    """What the switch is about, as a sentence starts: "Channel acq_alpha", "Operation withdrawal"."""
    kind, _, item = name.partition(":")
    return {"channel": f"Channel {item}", "operation": f"Operation {item}", "webhooks": "Webhooks",
            "read_only": "Read-only mode"}[kind]


def state_word(name: str, on: bool) -> str:
    normal, degraded = _WORDS[kind_of(name)][:2]
    return degraded if on else normal


def when(value: datetime | str | None) -> str:
    """A stored time (naive UTC, or RFC 3339) as operators read it: 2026-12-06 07:30:12 UTC."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def sentence(name: str, on: bool, since=None, by: str | None = None, reason: str | None = None) -> str:
    """"Channel acq_alpha: disabled since …, by …, because …" (a switch never set: its state alone)."""
    words = f"{subject(name)}: {state_word(name, on)}"
    if since is not None:
        words += f" since {when(since)}"
    if by:
        words += f", by {by}"
    if reason:
        words += f", because {reason}"
    return words


def _entry(name: str, stored: dict | None) -> dict:
    on = bool(stored and stored["on"])
    words = _WORDS[kind_of(name)]
    return {"name": name, "kind": kind_of(name), "subject": subject(name), "on": on,
            "state": state_word(name, on), "since": stored["updated_at"] if stored else None,
            "by": stored["updated_by"] if stored else None, "reason": stored["reason"] if stored else None,
            "words": sentence(name, on, *((stored["updated_at"], stored["updated_by"], stored["reason"])
                                           if stored else ())),
            "action": {"label": words[3] if on else words[2], "on": not on}}


def known_names() -> list[str]:
    """Every switch there is: one per stored channel (whether or not this process can build it), one
    per operation kind, webhooks, read-only."""
    from app.adapters import channel_definitions

    return ([f"channel:{cid}" for cid, _ in channel_definitions.current()]
            + [f"operation:{kind}" for kind in OperationKind.values()] + ["webhooks", "read_only"])


def board() -> list[dict]:
    """Each switch in words, channels first (a stored switch of a channel no longer configured too)."""
    stored = {row["name"]: row for row in switches.all()}
    names = known_names()
    names += sorted(set(stored) - set(names))
    return [_entry(name, stored.get(name)) for name in names]


def describe(name: str) -> dict:
    switches.validate_name(name)
    return _entry(name, next((row for row in switches.all() if row["name"] == name), None))


def history(name: str | None = None, limit: int = 100) -> list[dict]:
    """Switch changes, newest first (one switch's with ``name``), each in words:
    "2026-12-06 07:30:12 UTC: alice disabled channel acq_alpha, because acquirer outage"."""
    query = select(AuditLog).where(AuditLog.action == AUDIT_ACTION)
    if name is not None:
        query = query.where(AuditLog.target == switches.validate_name(name))
    query = query.order_by(AuditLog.created_at.desc(), AuditLog.id.desc()).limit(limit)
    changes = []
    with read_only() as session:
        for row in session.scalars(query):
            on = bool((row.after or {}).get("on"))
            changes.append({"at": when(row.created_at), "actor": row.actor, "name": row.target, "on": on,
                            "reason": row.reason,
                            "words": f"{when(row.created_at)}: {row.actor} "
                                     f"{_what_changed(row.target, on, (row.before or {}).get('on'))}"
                                     + (f", because {row.reason}" if row.reason else "")})
    return changes


def _what_changed(name: str, on: bool, was: bool | None) -> str:
    """"disabled channel acq_alpha", "resumed operation withdrawal", "kept webhooks paused"."""
    thing = subject(name)[0].lower() + subject(name)[1:]
    if was is not None and bool(was) == on:
        return f"kept {thing} {state_word(name, on)}"
    return f"{_WORDS[kind_of(name)][4 if on else 5]} {thing}"


def required_reason(reason) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidRequest("a reason is required", param="reason", code="parameter_missing")
    if len(reason) > REASON_MAX:
        raise InvalidRequest(f"reason must be at most {REASON_MAX} characters", param="reason")
    return reason.strip()


def change(name: str, degraded: bool, actor: str, reason: str) -> dict:
    """Turn a switch to its degraded (disabled, paused, on) or normal state, with a reason; audited
    and obeyed by every process within 2 s. Returns the switch in words."""
    switches.validate_name(name)
    reason = required_reason(reason)
    if kind_of(name) == "channel":
        _known_channel(name.split(":", 1)[1], stored=name in {row["name"] for row in switches.all()})
    stored = switches.set(name, degraded, actor, reason)
    return _entry(name, stored)


def _known_channel(channel_id: str, stored: bool) -> None:
    from app.adapters.channels_runtime import registry

    if channel_id not in registry() and not stored:
        raise InvalidRequest(f"no such channel {channel_id!r}: configured channels are "
                             + ", ".join(registry().ids()), param="channel", code="channel_unknown")


def disable_channel(channel_id: str, actor: str, reason: str) -> dict:
    return change(f"channel:{channel_id}", True, actor, reason)


def enable_channel(channel_id: str, actor: str, reason: str) -> dict:
    return change(f"channel:{channel_id}", False, actor, reason)


def pause_operation(kind: str, actor: str, reason: str) -> dict:
    return change(f"operation:{kind}", True, actor, reason)


def resume_operation(kind: str, actor: str, reason: str) -> dict:
    return change(f"operation:{kind}", False, actor, reason)


def pause_webhooks(actor: str, reason: str) -> dict:
    return change("webhooks", True, actor, reason)


def resume_webhooks(actor: str, reason: str) -> dict:
    return change("webhooks", False, actor, reason)


def read_only_mode(on: bool, actor: str, reason: str) -> dict:
    return change("read_only", on, actor, reason)
