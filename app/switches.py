"""Degradation switches: ``webhooks`` (paused), ``read_only``, ``channel:<id>`` (off),
``operation:<type>`` (paused). ``on`` means degraded.

Stored in the ``switches`` table, each change audited. Reads come from a per-process cache.
A change is announced over Redis pub/sub (app.notify): every listening process drops its copy
at once and re-reads the database on the next read (and every RELOAD_INTERVAL seconds anyway).
While a process is not listening, its cache is re-validated at most every ``CHECK_INTERVAL``
seconds against a Redis version key (a random token written on every change), so a toggle in
any process is seen everywhere within about half a second; with Redis down the cache re-reads
the database instead.
"""
from __future__ import annotations

import logging
import re
import secrets
import threading
import time

from sqlalchemy import select

from app import context, notify
from app.db import read_only, unit_of_work
from app.domain.errors import InvalidRequest
from app.models import AuditLog, Switch, utcnow
from app.redis_conn import get_redis
from app.representation import rfc3339

log = logging.getLogger("payrouter.switches")

VERSION_KEY = "payrouter:switches:version"
CHECK_INTERVAL = 0.5
RELOAD_INTERVAL = 5.0  # re-read the database this often anyway (a change announced while Redis was down)
OPERATIONS = ("payment", "topup", "withdrawal", "refund", "transfer")
_NAME = re.compile(r"^(webhooks|read_only|channel:[A-Za-z0-9_.-]{1,80}|operation:(%s))$" % "|".join(OPERATIONS))


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            f"unknown switch {name!r}: use webhooks, read_only, channel:<id> or operation:<{'|'.join(OPERATIONS)}>",
            param="name", code="switch_unknown")
    return name


class _Cache:
    """The switches of this process, with the version they were read at."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values: dict[str, bool] | None = None
        self.version: str | None = None
        self.loaded = 0.0
        self.watch = notify.Watch("switches")

    def invalidate(self) -> None:
        """A change (or a possibly missed one): the next read goes to the database."""
        self.watch.changed()

    def get(self) -> dict[str, bool]:
        with self.lock:
            now = time.monotonic()
            if self.values is not None and self.watch.fresh(now, CHECK_INTERVAL, RELOAD_INTERVAL):
                return self.values
            notice = self.watch.notice  # a notice arriving while we read makes the next read read again
            if notify.healthy():
                version, stale = self.version, True
            else:
                try:
                    version = get_redis().get(VERSION_KEY)
                    version = version.decode() if isinstance(version, bytes) else version
                    stale = (self.values is None or version != self.version or self.watch.missed()
                             or now - self.loaded > RELOAD_INTERVAL)
                except Exception as exc:  # Redis down: fall back to the database
                    log.debug("switch version check failed, reading the database: %s", exc)
                    version, stale = None, True
            if stale:
                self.values = _load()
                self.version, self.loaded = version, now
            self.watch.caught_up(notice, now)
            return self.values


_cache = _Cache()


def _load() -> dict[str, bool]:
    with read_only() as session:  # may run inside a request's open transaction
        return {s.name: bool(s.on) for s in session.scalars(select(Switch))}


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
        session.add(AuditLog(actor=actor, action="switch.set", target=name, before=before, after=after,
                             reason=reason, request_id=context.current_request_id(), created_at=utcnow()))
    announce()
    log.info("switch %s set %s by %s: %s", name, "on" if on else "off", actor, reason or "")
    return after


def announce() -> None:
    """Tell every process the switches changed (a new version token); this process re-reads at once."""
    _cache.invalidate()
    try:
        get_redis().set(VERSION_KEY, secrets.token_hex(8))
        notify.announce("switches")
    except Exception as exc:  # the others fall back on their own re-reads of the database
        log.warning("could not announce a switch change through Redis: %s", exc)


def reset_cache() -> None:
    _cache.invalidate()
