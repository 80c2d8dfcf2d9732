"""The live rule set of this process, hot-reloaded with no restart.

Every decision checks the live version at most every CHECK_INTERVAL seconds (a Redis GET,
falling back to the database), so a publish or rollback in any process is obeyed by every
API and worker process within about half a second. A new version is compiled, swapped in,
and the old engine handle freed.
"""
from __future__ import annotations

import threading
import time

import redis

from app.db import read_only
from rules import decide as decide_mod
from rules import format, store
from rules.engine import CompiledRules, RulesSlot

CHECK_INTERVAL = 0.5

_slot = RulesSlot()
_lock = threading.Lock()
_state = {"version": None, "checked": 0.0}


def _live_version() -> int | None:
    from app.redis_conn import get_redis

    try:
        value = get_redis().get(store.LIVE_KEY)
        if value is not None:
            return int(value)
    except redis.RedisError:
        pass
    with read_only() as session:
        live = store.live_version(session)
    if live is not None:
        store.announce(live)
    return live


def current() -> CompiledRules:
    now = time.monotonic()
    matcher = _slot.current
    if matcher is not None and now - _state["checked"] < CHECK_INTERVAL:
        return matcher
    with _lock:
        if _slot.current is not None and time.monotonic() - _state["checked"] < CHECK_INTERVAL:
            return _slot.current
        live = _live_version()
        if _slot.current is None or live != _state["version"]:
            if live is None:
                ruleset = format.load(store.DEFAULT_RULES.read_text())
            else:
                with read_only() as session:
                    ruleset = format.load(store.source_of(session, live))
            _slot.swap(CompiledRules(ruleset, live))
            _state["version"] = live
        _state["checked"] = time.monotonic()
        return _slot.current


def decide(facts: dict, availability, *, split_key: str) -> decide_mod.Decision:
    matcher = current()
    return decide_mod.decide(facts, matcher.ruleset, matcher, availability, split_key=split_key,
                             version=matcher.version)


def reset() -> None:
    """Forget the cached version (tests; after fork)."""
    with _lock:
        _state["version"], _state["checked"] = None, 0.0
        _slot.swap(None)


def version_in_use() -> int | None:
    """The rule-set version this process decides with right now (a health probe for ops and tests)."""
    return current().version
