"""The live rule set of this process, hot-reloaded with no restart.

A publish or rollback sends a change notice (app.adapters.notify, Redis pub/sub): every listening
process re-checks the live version on its next decision, and otherwise every RELOAD_INTERVAL
seconds. While a process is not listening (Redis down or reconnecting), every decision checks
the live version at most every CHECK_INTERVAL seconds (a Redis GET, falling back to the
database), so a change is obeyed by every API and worker process within about half a second
either way. A new version is compiled, swapped in, and the old engine handle freed.

A merchant's own set (contract §3) is kept the same way, per merchant, in a bounded cache: its live
version is a field of one Redis hash (the database when the field is missing), re-checked on a
change notice or after the same intervals; at most MERCHANT_SETS compiled sets stay in a process,
the least recently used closed first.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import redis

from app.adapters import notify
from app.adapters.db import read_only
from app.services import rules_store as store
from rules import decide as decide_mod
from rules import format
from rules.engine import CompiledRules, RulesSlot

CHECK_INTERVAL = 0.5
RELOAD_INTERVAL = 5.0
MERCHANT_SETS = 256  # compiled merchant sets kept per process (each holds an engine handle)

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


@dataclass
class _Own:
    version: int | None
    rules: decide_mod.MerchantRules | None
    checked: float
    seen: int


_merchants: OrderedDict[str, _Own] = OrderedDict()
_merchant_watch = notify.Watch("rules")


def _merchant_live_version(merchant: str) -> int | None:
    from app.adapters.redis_conn import get_redis

    try:
        value = get_redis().hget(store.MERCHANT_LIVE_KEY, merchant)
        if value is not None:
            return int(value) or None
    except redis.RedisError:
        pass
    with read_only() as session:
        live = store.live_version(session, merchant)
    store.announce(live, notify_others=False, merchant=merchant)
    return live


def merchant_rules(merchant: str | None) -> decide_mod.MerchantRules | None:
    """``merchant``'s own live set, compiled (None: it has none)."""
    if not merchant:
        return None
    now = time.monotonic()
    window = RELOAD_INTERVAL if notify.healthy() else CHECK_INTERVAL
    own = _merchants.get(merchant)
    if own is not None and own.seen == _merchant_watch.notice and now - own.checked < window:
        return own.rules
    with _lock:
        notice = _merchant_watch.notice
        own = _merchants.get(merchant)
        live = _merchant_live_version(merchant)
        if own is None or own.version != live:
            rules = None
            if live is not None:
                with read_only() as session:
                    ruleset = format.load(store.source_of(session, live, merchant))
                rules = decide_mod.MerchantRules(merchant, ruleset, CompiledRules(ruleset, live), live)
            if own is not None and own.rules is not None:
                own.rules.matcher.close()
            own = _Own(live, rules, 0.0, 0)
        own.checked, own.seen = time.monotonic(), notice
        _merchants[merchant] = own
        _merchants.move_to_end(merchant)
        while len(_merchants) > MERCHANT_SETS:
            _, evicted = _merchants.popitem(last=False)
            if evicted.rules is not None:
                evicted.rules.matcher.close()
        return own.rules


def decide(facts: dict, availability, *, split_key: str) -> decide_mod.Decision:
    """The decision under the live platform set and, for a merchant with one, its own live set."""
    matcher = current()
    own = merchant_rules((facts.get("merchant") or {}).get("id"))
    return decide_mod.decide(facts, matcher.ruleset, matcher, availability, split_key=split_key,
                             version=matcher.version, merchant=own)


def reset() -> None:
    """Forget the cached versions (tests; after fork)."""
    with _lock:
        _state["version"] = None
        _watch.expire()
        _slot.swap(None)
        while _merchants:
            _, own = _merchants.popitem()
            if own.rules is not None:
                own.rules.matcher.close()


def version_in_use() -> int | None:
    """The rule-set version this process decides with right now (a health probe for ops and tests)."""
    return current().version
