"""The live rule set of this process, hot-reloaded with no restart.

A publish or rollback sends a change notice (app.adapters.notify, Redis pub/sub): every listening
process re-checks the live version on its next decision, and otherwise every RELOAD_INTERVAL
seconds. While a process is not listening (Redis down or reconnecting), every decision checks
the live version at most every CHECK_INTERVAL seconds (a Redis GET, falling back to the
database), so a change is obeyed by every API and worker process within about half a second
either way. A new version is compiled, swapped in, and the old engine handle freed.

A merchant's own set (contract §3) is kept the same way, per merchant, in a bounded cache: its live
version is a field of one Redis hash (the database when the field is missing), re-checked on a
change notice or after the same intervals; at most ``rules_merchant_sets`` (a setting) compiled sets
stay in a process, the least recently used closed first.

For the ``rules_paired_sets`` (a setting) merchants a process decided for most recently, the
merchant's set is also compiled together with the platform's live set (``rules.decide.paired``), once
per (platform version, merchant version): a decision is then one engine match instead of two. A
publish of either set makes a new pair on that merchant's next decision; the old one is closed.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import redis

from app.adapters import notify
from app.adapters.db import read_only
from app.config import get_config
from app.services import rules_store as store
from rules import decide as decide_mod
from rules import format
from rules.engine import CompiledRules, EngineError, RulesSlot

CHECK_INTERVAL = 0.5
RELOAD_INTERVAL = 5.0

log = logging.getLogger("payrouter.rules")

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
        while len(_merchants) > get_config().rules_merchant_sets:
            _, evicted = _merchants.popitem(last=False)
            if evicted.rules is not None:
                evicted.rules.matcher.close()
        return own.rules


_pairs: OrderedDict[str, decide_mod.Paired] = OrderedDict()


def _close_pair(pair: decide_mod.Paired | None) -> None:
    if pair is not None and pair.matcher is not None:
        pair.matcher.close()


def pair_for(own: decide_mod.MerchantRules, platform: CompiledRules) -> decide_mod.Paired | None:
    """``own`` and the platform's ``platform`` compiled as one (built on first use, then cached); None
    when the two together exceed the engine's limits (then each is matched on its own)."""
    pair = _pairs.get(own.merchant)
    if pair is not None and pair.platform is platform and pair.merchant is own:
        try:
            _pairs.move_to_end(own.merchant)
        except KeyError:  # evicted meanwhile by another thread: still valid for this decision
            pass
        return pair if pair.matcher is not None else None
    with _lock:
        pair = _pairs.get(own.merchant)
        if pair is None or pair.platform is not platform or pair.merchant is not own:
            try:
                both = CompiledRules(decide_mod.paired(platform.ruleset, own), platform.version)
            except EngineError as exc:
                log.warning("rules of %s (version %s) and the platform's (version %s) cannot be compiled as one; "
                            "each is matched on its own: %s", own.merchant, own.version, platform.version, exc)
                both = None
            _close_pair(pair)
            pair = decide_mod.Paired(platform, own, both)
            _pairs[own.merchant] = pair
        _pairs.move_to_end(own.merchant)
        while len(_pairs) > get_config().rules_paired_sets:
            _close_pair(_pairs.popitem(last=False)[1])
        return pair if pair.matcher is not None else None


def decide(facts: dict, availability, *, split_key: str, defer_scores: bool = False) -> decide_mod.Decision:
    """The decision under the live platform set and, for a merchant with one, its own live set (one
    engine match for both: ``pair_for``). ``defer_scores``: see ``rules.decide.decide``."""
    matcher = current()
    own = merchant_rules((facts.get("merchant") or {}).get("id"))
    pair = pair_for(own, matcher) if own is not None else None
    return decide_mod.decide(facts, matcher.ruleset, matcher, availability, split_key=split_key,
                             version=matcher.version, merchant=own, pair=pair, defer_scores=defer_scores)


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
        while _pairs:
            _close_pair(_pairs.popitem()[1])


def version_in_use() -> int | None:
    """The rule-set version this process decides with right now (a health probe for ops and tests)."""
    return current().version
