"""The live rule set of this process, hot-reloaded with no restart.

A publish or rollback sends a change notice (app.adapters.notify, Redis pub/sub): every listening
process re-checks the live version on its next decision, and otherwise every RELOAD_INTERVAL
seconds. While a process is not listening (Redis down or reconnecting), every decision checks
the live version at most every CHECK_INTERVAL seconds (a Redis GET, falling back to the
database), so a change is obeyed by every API and worker process within about half a second
either way. A new version is compiled, swapped in, and the old engine handle freed.
"""
from __future__ import annotations

import threading
import time

import redis

from app.adapters import notify
from app.adapters.db import read_only
from app.services import rules_store as store
from rules import decide as decide_mod
from rules import format
from rules.engine import CompiledRules, RulesSlot

CHECK_INTERVAL = 0.5
RELOAD_INTERVAL = 5.0

_slot = RulesSlot()
_lock = threading.Lock()
_state = {"version": None}
_watch = notify.Watch("rules")


def _live_version() -> int | None:
    from app.adapters.redis_conn import get_redis

    try:
        value = get_redis().get(store.LIVE_KEY)
        if value is not None:
            return int(value)
    except redis.RedisError:
        pass
    with read_only() as session:
        live = store.live_version(session)
    if live is not None:
        store.announce(live, notify_others=False)
    return live


def _fresh(now: float) -> bool:
    return _slot.current is not None and _watch.fresh(now, CHECK_INTERVAL, RELOAD_INTERVAL)


def current() -> CompiledRules:
    matcher = _slot.current
    if _fresh(time.monotonic()):
        return matcher
    with _lock:
        if _fresh(time.monotonic()):
            return _slot.current
        notice = _watch.notice
        live = _live_version()
        if _slot.current is None or live != _state["version"]:
            if live is None:
                ruleset = format.load(store.DEFAULT_RULES.read_text())
            else:
                with read_only() as session:
                    ruleset = format.load(store.source_of(session, live))
            _slot.swap(CompiledRules(ruleset, live))
            _state["version"] = live
        _watch.caught_up(notice, time.monotonic())
        return _slot.current


def decide(facts: dict, availability, *, split_key: str) -> decide_mod.Decision:
    matcher = current()
    return decide_mod.decide(facts, matcher.ruleset, matcher, availability, split_key=split_key,
                             version=matcher.version)


def reset() -> None:
    """Forget the cached version (tests; after fork)."""
    with _lock:
        _state["version"] = None
        _watch.expire()
        _slot.swap(None)


def version_in_use() -> int | None:
    """The rule-set version this process decides with right now (a health probe for ops and tests)."""
    return current().version
