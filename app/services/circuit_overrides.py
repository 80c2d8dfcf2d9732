"""Circuits opened by hand: a row in ``circuit_overrides`` per channel an operator opened.

The breaker (app.services.breaker) asks ``opened`` before anything else, on every call: the answer comes
from this process's copy of the table (app.adapters.cached), so a healthy channel costs no round trip. A
change is announced on the ``breakers`` topic, which also makes every process forget the
circuits it trusted closed: every process obeys an override within milliseconds while it hears
notices, within about half a second while it polls, and re-reads the table every few seconds
anyway. Stored in the database, an override outlives a Redis restart. Opening and closing
(audited, with the breaker's own state) is app.services.channels.
"""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.adapters import cached
from app.adapters.db import read_only
from app.adapters.models import CircuitOverride, utcnow
from app.services.representation import rfc3339

VERSION_KEY = "payrouter:circuit_overrides:version"


def _load() -> dict[str, dict]:
    with read_only() as session:  # may run inside a request's open transaction
        return {row.channel: representation(row) for row in session.scalars(select(CircuitOverride))}


_copy = cached.Copy("breakers", VERSION_KEY, _load)


def representation(row: CircuitOverride) -> dict:
    return {"channel": row.channel, "opened_by": row.opened_by, "reason": row.reason,
            "opened_at": rfc3339(row.opened_at)}


def opened(channel_id: str) -> dict | None:
    """The override that holds this channel's circuit open (who, why, since), or None."""
    return _copy.get().get(channel_id)


def put(session: Session, channel_id: str, actor: str, reason: str) -> dict:
    """Hold the circuit open (in ``session``: it commits with its audit row); ``announce`` after."""
    row = session.get(CircuitOverride, channel_id, with_for_update=True)
    if row is None:
        row = CircuitOverride(channel=channel_id)
        session.add(row)
    row.opened_by, row.reason, row.opened_at = actor, reason, utcnow()
    session.flush()
    return representation(row)


def remove(session: Session, channel_id: str) -> bool:
    """Let the breaker decide again; True if an override was there."""
    return session.execute(delete(CircuitOverride).where(CircuitOverride.channel == channel_id)).rowcount > 0


def announce() -> None:
    """Every process re-reads the overrides and forgets the circuits it trusted closed."""
    _copy.announce()


def reset_cache() -> None:
    _copy.invalidate()
