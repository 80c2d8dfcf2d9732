"""Degradation switches: ``webhooks`` (paused), ``read_only``, ``channel:<id>`` (off),
``operation:<type>`` (paused). ``on`` means degraded.

Stored in the ``switches`` table, each change audited. Reads come from a per-process copy
(app.adapters.cached: dropped by a change notice, re-validated against a Redis version key while not
listening, the database when Redis is down), so a toggle in any process is seen everywhere
within about half a second.
"""
from __future__ import annotations

import logging
import re

from sqlalchemy import select

from app.adapters import cached
from app.adapters.db import read_only, unit_of_work
from app.adapters.models import Switch, utcnow
from app.domain.errors import InvalidRequest
from app.domain.kinds import OperationKind
from app.services import audit
from app.services.representation import rfc3339

log = logging.getLogger("payrouter.switches")

VERSION_KEY = "payrouter:switches:version"
# What a request refused by a switch (an operation kind paused, read-only mode) answers in Retry-After: an
# operator turns a switch back in minutes, so a client retrying every second would only add load.
RETRY_AFTER_SECONDS = 30
_KINDS = "|".join(OperationKind.values())
_NAME = re.compile(r"^(webhooks|read_only|channel:[A-Za-z0-9_.-]{1,80}|operation:(%s))$" % _KINDS)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            f"unknown switch {name!r}: use webhooks, read_only, channel:<id> or operation:<{_KINDS}>",
            param="name", code="switch_unknown")
    return name


def _load() -> dict[str, bool]:
    with read_only() as session:  # may run inside a request's open transaction
        return {s.name: bool(s.on) for s in session.scalars(select(Switch))}


_cache = cached.Copy("switches", VERSION_KEY, _load)


def is_on(name: str) -> bool:
    """Whether the switch is on (degraded), as seen by this process within ~0.5 s."""
    return _cache.get().get(validate_name(name), False)


def representation(switch: Switch) -> dict:
    return {"object": "switch", "name": switch.name, "on": bool(switch.on), "reason": switch.reason,
            "updated_by": switch.updated_by, "updated_at": rfc3339(switch.updated_at)}


def all() -> list[dict]:  # noqa: A001 - the module's public verb, as in switches.all()
    """Every stored switch, by name (switches never set are off and not listed)."""
    with unit_of_work() as session:
        return [representation(s) for s in session.scalars(select(Switch).order_by(Switch.name))]


def set(name: str, on: bool, actor: str, reason: str | None = None) -> dict:  # noqa: A001
    """Turn a switch on or off, audited (who, when, before, after, reason); announced to every process."""
    validate_name(name)
    if not actor:
        raise InvalidRequest("actor is required", param="actor")
    with unit_of_work() as session:
        switch = session.get(Switch, name, with_for_update=True)
        before = representation(switch) if switch else None
        if switch is None:
            switch = Switch(name=name)
            session.add(switch)
        switch.on, switch.reason, switch.updated_by, switch.updated_at = bool(on), reason, actor, utcnow()
        session.flush()
        after = representation(switch)
        audit.record(session, actor=actor, action="switch.set", target=name, before=before, after=after,
                     reason=reason)
    announce()
    log.info("switch %s set %s by %s: %s", name, "on" if on else "off", actor, reason or "")
    return after


def announce() -> None:
    """Tell every process the switches changed (a new version token); this process re-reads at once."""
    _cache.announce()


def reset_cache() -> None:
    _cache.invalidate()
