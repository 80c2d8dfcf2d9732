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

For at most ``rules_paired_sets`` (a setting; 0: none) merchants, the busiest (see ``_pairs``), the
merchant's set is also compiled together with the platform's live set (``rules.decide.paired``), once per
(platform version, merchant version), by a background thread, never on a decision: a decision is then one
engine match instead of two (two until the pair is ready). A new platform version closes every pair of
the old one at once; a merchant's new version closes its pair at its next decision.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import redis

from app.adapters import metrics, notify
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
            _platform_swapped(_slot.current)
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
    own = _merchants.get(merchant)
    if (own is not None and own.seen == _merchant_watch.notice
            and notify.recent(now - own.checked, CHECK_INTERVAL, RELOAD_INTERVAL)):
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


# Pairs (``rules_paired_sets`` of them at most). ``_pairs``: the merchants admitted to a pair, least recently
# decided first, each with its pair for the platform's and its own live versions, or None while it has none
# (being built, or its old one closed). ``_heat``: recent decisions per merchant with a set, all halved
# every window of ``_HEAT_WINDOW`` decisions per slot (a small TinyLFU-like frequency count). A merchant not
# admitted is admitted while a slot is free; once all are taken, only when it is more than twice as hot
# (plus ``_ADMIT_MARGIN``) as the least recently decided admitted merchant, which gives its slot up, and at
# most once per window: with more merchants than slots and none much busier than the others, the same
# ones keep their pairs and the rest are decided with two matches (a pair compile, ~15 ms, is worth
# thousands of decisions' savings). Pairs are compiled by one builder thread per process (``_Builder``),
# never on a decision: until its pair is ready a merchant is decided with two matches.
_pairs: OrderedDict[str, decide_mod.Paired | None] = OrderedDict()
_pair_lock = threading.Lock()
_heat: dict[str, int] = {}
_heat_seen = [0]
_HEAT_WINDOW = 64
_ADMIT_MARGIN = 2
_swaps_left = [1]  # slots taken from an admitted merchant in this window so far: at most one
_queued: OrderedDict[str, tuple[decide_mod.MerchantRules, CompiledRules]] = OrderedDict()
_building: dict[str, tuple[decide_mod.MerchantRules, CompiledRules]] = {}  # the one being compiled now
_idle = threading.Condition(_pair_lock)
_builder: _Builder | None = None
_generation = [0]  # bumped by reset(): a build started before it is thrown away


def _close_pair(pair: decide_mod.Paired | None) -> None:
    if pair is not None and pair.matcher is not None:
        pair.matcher.close()


def _warm(merchant: str, slots: int) -> None:
    global _heat
    heat = _heat
    heat[merchant] = heat.get(merchant, 0) + 1
    _heat_seen[0] += 1
    if _heat_seen[0] >= _HEAT_WINDOW * slots + 64:
        _heat_seen[0], _swaps_left[0] = 0, 1
        _heat = {m: n >> 1 for m, n in heat.copy().items() if n > 1}  # lost increments meanwhile do not matter


def pair_for(own: decide_mod.MerchantRules, platform: CompiledRules) -> decide_mod.Paired | None:
    """``own`` and the platform's ``platform`` compiled as one, if this merchant has a pair ready for these
    versions; else None (match each on its own), and the pair is queued to be built in the background when
    the merchant holds a slot or is admitted to one (see ``_pairs``)."""
    slots = get_config().rules_paired_sets
    if slots <= 0:
        return None
    merchant = own.merchant
    _warm(merchant, slots)
    pair = _pairs.get(merchant)
    if pair is not None and pair.serves(platform, own) \
            and (pair.failed is None or pair.matcher is None):
        try:
            _pairs.move_to_end(merchant)
        except KeyError:  # evicted meanwhile by another thread: still valid for this decision
            pass
        return pair if pair.matcher is not None else None
    if pair is None and merchant not in _pairs and len(_pairs) >= slots and not _hotter(merchant):
        return None  # not admitted (read without the lock; _want checks again under it)
    _want(own, platform, slots)
    return None


def _hotter(merchant: str) -> bool:
    """Whether ``merchant`` may take the slot of the least recently decided admitted merchant."""
    try:
        coldest = next(iter(_pairs))
    except (StopIteration, RuntimeError):  # empty, or changed meanwhile: let _want decide under the lock
        return True
    return _swaps_left[0] > 0 and _heat.get(merchant, 0) > 2 * _heat.get(coldest, 0) + _ADMIT_MARGIN


def _want(own: decide_mod.MerchantRules, platform: CompiledRules, slots: int) -> None:
    merchant = own.merchant
    with _pair_lock:
        if merchant in _pairs:
            _pairs.move_to_end(merchant)
            pair = _pairs[merchant]
            if pair is not None and pair.serves(platform, own):
                if pair.failed is not None and pair.matcher is not None:  # failed on a fact: two matches from now on
                    _pairs[merchant] = decide_mod.Paired(platform, own, None, pair.failed)
                    _close_pair(pair)
                return
            if pair is not None:  # built for another version of either set: of no use any more
                _pairs[merchant] = None
                _close_pair(pair)
        else:
            if len(_pairs) >= slots:
                if not _hotter(merchant):
                    return
                _swaps_left[0] -= 1
                while _pairs and len(_pairs) >= slots:  # the coldest out (more than one if the setting was lowered)
                    gone, old = _pairs.popitem(last=False)
                    _queued.pop(gone, None)
                    _close_pair(old)
            _pairs[merchant] = None
        building = _building.get(merchant)
        if building is not None and building[0] is own and building[1] is platform:
            return  # being compiled right now: asking again would compile it twice
        _queued[merchant] = (own, platform)
        _ensure_builder().wake.set()


def _is_live(merchant: str, own: decide_mod.MerchantRules, platform: CompiledRules) -> bool:
    cached = _merchants.get(merchant)
    return _slot.current is platform and cached is not None and cached.rules is own


class _Builder(threading.Thread):
    """Compiles the queued pairs, one at a time, off the request path (``CompiledRules`` holds the engine
    lock while it creates the handle, as every engine call does)."""

    def __init__(self) -> None:
        super().__init__(name="payrouter-rules-pairs", daemon=True)
        self.pid, self.busy, self.wake = os.getpid(), False, threading.Event()

    def run(self) -> None:
        while True:
            self.wake.wait()
            with _pair_lock:
                if not _queued:
                    self.wake.clear()
                    self.busy = False
                    _idle.notify_all()
                    continue
                merchant, (own, platform) = _queued.popitem(last=False)
                self.busy, generation = True, _generation[0]
                _building[merchant] = (own, platform)
            try:
                self._build(merchant, own, platform, generation)
            except Exception:  # pragma: no cover - never let the thread die: the merchant keeps two matches
                log.exception("building the pair of %s failed", merchant)
            finally:
                with _pair_lock:
                    _building.pop(merchant, None)

    @staticmethod
    def _build(merchant: str, own: decide_mod.MerchantRules, platform: CompiledRules, generation: int) -> None:
        if not _is_live(merchant, own, platform):
            return  # a newer version of either set: its next decision asks again
        held = _pairs.get(merchant)
        if held is not None and held.serves(platform, own):
            return  # built already
        try:
            both = CompiledRules(decide_mod.paired(platform.ruleset, own), platform.version)
        except EngineError as exc:
            log.warning("rules of %s (version %s) and the platform's (version %s) cannot be compiled as one; "
                        "each is matched on its own: %s", own.merchant, own.version, platform.version, exc)
            both = None
        metrics.RULES_PAIR_BUILDS.inc()
        with _pair_lock:
            if generation == _generation[0] and merchant in _pairs and _pairs[merchant] is None \
                    and _is_live(merchant, own, platform):
                _pairs[merchant] = decide_mod.Paired(platform, own, both)
                both = None
        if both is not None:  # given up while it was built
            both.close()


def _ensure_builder() -> _Builder:
    """The builder thread of this process (started on first use, again after a fork); caller holds _pair_lock."""
    global _builder
    builder = _builder
    if builder is None or builder.pid != os.getpid() or not builder.is_alive():
        builder = _builder = _Builder()
        builder.start()
    return builder


def settle(timeout: float = 30.0) -> bool:
    """Wait until every queued pair is built (tests, the bench); False if that took over ``timeout`` s."""
    deadline = time.monotonic() + timeout
    with _pair_lock:
        while _queued or (_builder is not None and _builder.busy and _builder.is_alive()):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _idle.wait(left)
    return True


def _platform_swapped(platform: CompiledRules) -> None:
    """A new platform version is live: close every pair built on another (each is rebuilt, in the
    background, on its merchant's next decision)."""
    with _pair_lock:
        for merchant, pair in _pairs.items():
            if pair is not None and pair.platform is not platform:
                _pairs[merchant] = None
                _close_pair(pair)


def _after_fork_in_child() -> None:
    global _pair_lock, _idle, _builder
    _pair_lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _idle = threading.Condition(_pair_lock)
    _builder = None
    _queued.clear()
    _building.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
    with _pair_lock:
        _generation[0] += 1
        _queued.clear()
        _heat.clear()
        _heat_seen[0], _swaps_left[0] = 0, 1
        while _pairs:
            _close_pair(_pairs.popitem()[1])


def version_in_use() -> int | None:
    """The rule-set version this process decides with right now (a health probe for ops and tests)."""
    return current().version
