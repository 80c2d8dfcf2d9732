"""The routing decision of contract §1/§3, from facts, a rule set and a matcher.

``matcher`` is ``rules.engine.CompiledRules`` or ``rules.reference.ReferenceRules`` (same
``match(flat_facts)``); ``availability`` answers ``drop_reason(channel, *, operation,
currency, method) -> str | None``. Order of outcomes: the highest-priority ``decline`` rule;
then ``max_amount``/``min_amount`` (``limit_exceeded``, naming the rule); then routing, where
no channel left gives ``no_route``. Daily limits are enforced later by ``rules.limits.reserve``.
"""
from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from app.domain.errors import InvalidRequest
from rules.engine import EngineError
from rules.facts import facts_for, flatten
from rules.fees import compute_fee
from rules.model import Fee, RuleSet, Strategy

log = logging.getLogger("payrouter.rules")
STRATEGY_KEYS = ("strategy", "scores", "strategy_fallback", "exploration")  # a decision's account of its strategy

__all__ = ["STRATEGY_KEYS", "Availability", "Decision", "MerchantRules", "Paired", "Strategist", "decide", "facts_for",
           "ScoresNeeded", "by_success_rate", "combine_limits", "paired", "split_order", "order_by_strategy", "sources",
           "with_counts"]


class Availability(Protocol):
    def drop_reason(self, channel_id: str, *, operation: str, currency: str, method: str | None) -> str | None:
        """Why ``channel_id`` cannot take this operation now ("switched_off", "circuit_open", ...), or None."""


@runtime_checkable
class Strategist(Protocol):
    """What a ``cost`` or ``success_rate`` strategy needs from outside the engine (app.services.routing)."""

    rng: random.Random  # exploration's random source (seeded in tests and the bench)

    def costs(self, channels: tuple[str, ...]) -> Mapping[str, Fee]:
        """Each channel's ``cost`` as a fee spec (percent + fixed)."""

    def outcomes(self, channels: tuple[str, ...], *, window_minutes: int, operation: str, currency: str,
                 method: str | None) -> Mapping[str, tuple[int, int]] | None:
        """``{channel: (succeeded, final outcomes)}`` over the window, or None when they cannot be read."""


_STRATEGIST_TYPES: dict[type, bool] = {}


def _is_strategist(obj: object) -> bool:
    """``isinstance(obj, Strategist)``, remembered per type: a runtime-checkable Protocol's isinstance
    inspects every member each time (about 97k instructions, more than the engine match of 100 rules)."""
    kind = type(obj)
    known = _STRATEGIST_TYPES.get(kind)
    if known is None:
        known = _STRATEGIST_TYPES[kind] = isinstance(obj, Strategist)
    return known


class Matcher(Protocol):
    version: int | None

    def match(self, facts: Mapping[str, Any]) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class ScoresNeeded:
    """What a ``success_rate`` route still has to read before its decision is final: its candidates'
    outcome counts over the window, for this kind, method and currency (``decide(..., defer_scores=True)``
    lets the caller read them in the same Redis round trip as the velocity-limit reservation)."""

    strategy: Strategy
    channels: tuple[str, ...]
    operation: str
    currency: str
    method: str | None
    rng: random.Random | None


@dataclass(frozen=True, init=False)
class Decision:
    """A routing decision; ``to_dict()`` is the contract's ``routing_decision`` object.

    Frozen; its ``__init__`` fills the instance's dict at once instead of one ``object.__setattr__``
    call per field (a frozen dataclass's own: about 20k instructions, a tenth of a decision at 100
    rules). Its parameters are the fields, in order (tested)."""

    outcome: str  # "route" | "decline"
    decline_code: str | None
    channel: str | None
    candidates: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...]
    matched_rules: tuple[str, ...]
    fee: int
    limits: dict = field(default_factory=dict)
    ruleset_version: int | None = None
    declined_by: str | None = None  # the rule that declined or set the exceeded limit
    retry: dict | None = None  # {"on": [codes], "max", "rule"}: soft declines that try the next candidate
    strategy: dict | None = None  # order_by_strategy's account: {strategy, scores?, fallback?, exploration?}
    merchant_ruleset_version: int | None = None  # the merchant's own set decided beside the platform's
    # decide(..., defer_scores=True): the success-rate counts this decision still waits for (with_counts)
    scores_needed: ScoresNeeded | None = field(default=None, compare=False, repr=False)

    def __init__(self, outcome: str, decline_code: str | None, channel: str | None, candidates: tuple[str, ...],
                 dropped: tuple[tuple[str, str], ...], matched_rules: tuple[str, ...], fee: int,
                 limits: dict | None = None, ruleset_version: int | None = None, declined_by: str | None = None,
                 retry: dict | None = None, strategy: dict | None = None, merchant_ruleset_version: int | None = None,
                 scores_needed: ScoresNeeded | None = None):
        self.__dict__.update(
            outcome=outcome, decline_code=decline_code, channel=channel, candidates=candidates, dropped=dropped,
            matched_rules=matched_rules, fee=fee, limits={} if limits is None else limits,
            ruleset_version=ruleset_version, declined_by=declined_by, retry=retry, strategy=strategy,
            merchant_ruleset_version=merchant_ruleset_version, scores_needed=scores_needed)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"object": "routing_decision", "outcome": self.outcome}
        if self.decline_code is not None:
            out["decline_code"] = self.decline_code
        out.update({
            "channel": self.channel, "candidates": list(self.candidates),
            "dropped": [{"channel": c, "reason": r} for c, r in self.dropped],
            "matched_rules": list(self.matched_rules), "fee": self.fee,
            "limits": {k: ([dict(x) for x in v] if isinstance(v, list) else dict(v)) for k, v in self.limits.items()},
            "ruleset_version": self.ruleset_version,
        })
        if self.merchant_ruleset_version is not None:
            out["merchant_ruleset_version"] = self.merchant_ruleset_version
        if self.strategy is not None:
            out["strategy"] = self.strategy["strategy"]
            if "scores" in self.strategy:
                out["scores"] = {ch: dict(score) for ch, score in self.strategy["scores"].items()}
            if "fallback" in self.strategy:
                out["strategy_fallback"] = self.strategy["fallback"]
            if self.strategy.get("exploration"):
                out["exploration"] = True
        if self.retry is not None:
            out["retry"] = {"on": list(self.retry["on"]), "max": self.retry["max"], "rule": self.retry["rule"]}
        return out


def combine_limits(ruleset: RuleSet, matched: tuple[str, ...], *more: tuple[RuleSet, tuple[str, ...], str]) -> dict:
    """Limits of all matched rules, strictest winning, each naming the rule that set it.

    ``more``: further ``(ruleset, matched, prefix)`` layers (a merchant's set, its rule ids shown with
    ``prefix``); on a tie the earlier layer, then the higher-priority rule, keeps the credit.
    ``{"max_amount": {"max", "rule"}, "min_amount": {"min", "rule"},
    "daily_amount": [{"per", "max", "rule"}], "daily_count": [...]}`` (keys only when set).
    """
    out: dict[str, Any] = {}
    daily: dict[str, dict[str, dict]] = {"daily_amount": {}, "daily_count": {}}
    for rules, ids, prefix in ((ruleset, matched, ""), *more):
        by_id = rules.by_id()
        for rid in ids:  # priority order: on ties the higher-priority rule keeps the credit
            lim = by_id[rid].then.limits
            if lim is None:
                continue
            name = prefix + rid
            if lim.max_amount is not None and ("max_amount" not in out or lim.max_amount < out["max_amount"]["max"]):
                out["max_amount"] = {"max": lim.max_amount, "rule": name}
            if lim.min_amount is not None and ("min_amount" not in out or lim.min_amount > out["min_amount"]["min"]):
                out["min_amount"] = {"min": lim.min_amount, "rule": name}
            for key in daily:
                d = getattr(lim, key)
                if d is not None and (d.per not in daily[key] or d.max < daily[key][d.per]["max"]):
                    daily[key][d.per] = {"per": d.per, "max": d.max, "rule": name}
    for key, scopes in daily.items():
        if scopes:
            out[key] = [scopes[s] for s in ("customer", "merchant") if s in scopes]
    return out


def _bucket(key: str, salt: str) -> int:
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000


def split_order(split: tuple[tuple[str, int], ...], split_key: str, salt: str = "") -> tuple[str, ...]:
    """Deterministic weighted pick for ``split_key``: the chosen channel, then the rest by weight."""
    bucket = _bucket(split_key, salt)
    upto = 0
    chosen = split[-1][0]
    for channel, weight in split:
        upto += weight * 100
        if bucket < upto:
            chosen = channel
            break
    rest = sorted((item for item in split if item[0] != chosen), key=lambda item: -item[1])  # stable: file order
    return (chosen, *(c for c, _ in rest))


def order_by_strategy(strategy: Strategy, candidates: tuple[str, ...], strategist: Strategist | None, *,
                      amount: int, currency: str, operation: str, method: str | None) -> tuple[tuple[str, ...], dict]:
    """The candidates in the strategy's order, and what it saw (the decision's ``strategy``/``scores``).

    ``cost``: cheapest first, each channel's cost computed as fees are (``compute_fee``: half-up to the
    minor unit); ties keep the listed order. ``success_rate``: highest share of succeeded first; a channel
    under ``min_samples`` outcomes scores as the average of those over it (no channel over it: the listed
    order); ``exploration_percent`` of decisions take a random order instead. When the inputs cannot be
    had (no strategist, Redis down), the listed order, with ``fallback`` saying why."""
    info: dict[str, Any] = {"strategy": strategy.name}
    if strategy.name == "cost":
        costs = strategist.costs(candidates) if strategist is not None else None
        if costs is None:
            info["fallback"] = "costs_unavailable"
            return candidates, info
        priced = {ch: compute_fee(costs.get(ch), amount, currency) for ch in candidates}
        info["scores"] = {ch: {"cost": priced[ch]} for ch in candidates}
        return tuple(sorted(candidates, key=priced.__getitem__)), info  # sorted is stable: ties keep the list
    counts = strategist.outcomes(candidates, window_minutes=strategy.window_minutes, operation=operation,
                                 currency=currency, method=method) if strategist is not None else None
    return by_success_rate(strategy, candidates, counts, strategist.rng if strategist is not None else None)


def by_success_rate(strategy: Strategy, candidates: tuple[str, ...], counts: Mapping[str, tuple[int, int]] | None,
                    rng: random.Random | None) -> tuple[tuple[str, ...], dict]:
    """``success_rate``'s order of ``candidates`` from their ``{channel: (succeeded, outcomes)}`` over the
    window (None: they could not be read), and its account, as ``order_by_strategy`` describes."""
    info: dict[str, Any] = {"strategy": strategy.name}
    if counts is None:
        info["fallback"] = "redis_unavailable"
        return candidates, info
    rates = {ch: ok / n for ch, (ok, n) in ((ch, counts.get(ch, (0, 0))) for ch in candidates)
             if n >= strategy.min_samples}
    average = sum(rates.values()) / len(rates) if rates else None
    scores = {ch: rates.get(ch, average) for ch in candidates}
    info["scores"] = {ch: {"score": None if scores[ch] is None else round(scores[ch], 4),
                           "samples": counts.get(ch, (0, 0))[1]} for ch in candidates}
    if strategy.exploration_percent and rng.random() * 100 < strategy.exploration_percent:
        info["exploration"] = True
        return tuple(rng.sample(candidates, len(candidates))), info
    if average is None:
        return candidates, info
    return tuple(sorted(candidates, key=lambda ch: -scores[ch])), info


@dataclass(frozen=True)
class MerchantRules:
    """A merchant's own rule set, decided beside the platform's (contract §3): its rule ids show as
    ``<merchant>/<id>`` (a rule id cannot hold "/", so they never collide with the platform's)."""

    merchant: str
    ruleset: RuleSet
    matcher: Matcher
    version: int | None = None

    @property
    def prefix(self) -> str:
        return f"{self.merchant}/"


def paired(platform: RuleSet, merchant: MerchantRules) -> RuleSet:
    """The platform's rules and the merchant's in one set, for ONE engine match per decision: the
    merchant's ids carry its prefix (``<merchant>/<id>``; a rule id cannot hold "/"), and its rules
    follow the platform's, so the matches of each owner come out in that owner's own order (priority
    descending, then file order). Defaults are the platform's; ``decide`` reads each owner's own."""
    offset = len(platform.rules)
    prefix = merchant.prefix
    own = tuple(replace(rule, id=prefix + rule.id, index=offset + rule.index) for rule in merchant.ruleset.rules)
    return RuleSet(platform.rules + own, platform.defaults)


@dataclass(eq=False)
class Paired:
    """A matcher over ``paired(platform, merchant)``, valid only beside that platform ``matcher`` and that
    ``merchant`` object (a new version of either is a new pair). ``matcher`` None: the two could not be
    compiled as one (the engine's limits), so each is matched on its own. ``failed``: why the engine
    failed on a fact of this pair (error 303: more than 64 conditions matching one fact, which the two
    sets apart may stay under): from then on each set is matched on its own, logged once."""

    platform: Matcher
    merchant: MerchantRules
    matcher: Matcher | None
    failed: str | None = None

    def serves(self, platform: Matcher, merchant: MerchantRules) -> bool:
        """Built for exactly this platform matcher and this merchant's set (another version of either: not)."""
        return self.platform is platform and self.merchant is merchant

    def match(self, flat: Mapping[str, Any]) -> tuple[str, ...] | None:
        """Both sets' matches in one engine match (the merchant's ids prefixed), or None: match each set
        on its own this time (the pair cannot be used, or its handle was closed meanwhile)."""
        matcher = self.matcher
        if matcher is None or self.failed is not None:
            return None
        try_match = getattr(matcher, "try_match", None)
        if try_match is None:  # the reference evaluator: it cannot fail
            return matcher.match(flat)
        try:
            return try_match(flat)
        except EngineError as exc:
            if self.failed is None:
                self.failed = str(exc)
                log.warning("rules of %s (version %s) and the platform's (version %s) matched as one failed: %s; "
                            "from now on each is matched on its own", self.merchant.merchant, self.merchant.version,
                            getattr(self.platform, "version", None), exc)
            return None


def _pick(ruleset: RuleSet, matched: tuple[str, ...], attr: str) -> tuple[str | None, Any]:
    by_id = ruleset.by_id()
    for rid in matched:
        then = by_id[rid].then
        value = then.route or then.split if attr == "routing" else getattr(then, attr)
        if value:
            return rid, then
    return None, ruleset.defaults


def _has(then, attr: str) -> bool:
    return bool(then.route or then.split) if attr == "routing" else bool(getattr(then, attr))


def _pick_layered(ruleset: RuleSet, matched: tuple[str, ...], merchant: MerchantRules | None,
                  own: tuple[str, ...], attr: str) -> tuple[str | None, Any]:
    """``route``/``split``/``retry`` from the merchant's set where it has one (a matching rule, else its
    defaults), else the platform's; the rule is named as the decision shows it."""
    if merchant is not None:
        rid, then = _pick(merchant.ruleset, own, attr)
        if _has(then, attr):
            return merchant.prefix + (rid or "defaults"), then
    return _pick(ruleset, matched, attr)


def sources(ruleset: RuleSet, matched: tuple[str, ...], merchant: MerchantRules | None = None) -> dict:
    """Which rule gave the routing and which the fee (``"defaults"`` when none did), and that fee spec:
    the "why" beside a decision (the admin UI's simulate). ``matched``: the decision's matched rules."""
    prefix = merchant.prefix if merchant is not None else None
    own = tuple(r[len(prefix):] for r in matched if r.startswith(prefix)) if prefix else ()
    platform = tuple(r for r in matched if not (prefix and r.startswith(prefix)))
    route_rule, _ = _pick_layered(ruleset, platform, merchant, own, "routing")
    fee_rule, then = _pick(ruleset, platform, "fee")
    return {"routing": route_rule or "defaults", "fee": fee_rule or "defaults", "fee_spec": then.fee}


def decide(facts: Mapping[str, Any], ruleset: RuleSet, matcher: Matcher, availability: Availability | None = None,
           *, split_key: str, version: int | None = None, strategist: Strategist | None = None,
           merchant: MerchantRules | None = None, pair: Paired | None = None,
           defer_scores: bool = False) -> Decision:
    """Evaluate every rule and resolve the outcome (contract §3). Never raises for a decline.
    ``strategist``: the inputs of a ``cost`` or ``success_rate`` route (default: ``availability``, if it
    is one). ``merchant``: the operation's merchant's own set: every decline and limit of both sets
    applies (the platform's declines first, the strictest limit wins), route/split/retry come from
    the merchant's set where it has one, the fee only from the platform's. ``pair``: both sets compiled
    as one (``paired``), used when it was built for this ``matcher`` and this ``merchant``: one engine
    match instead of two, the same answer. ``defer_scores``: a ``success_rate`` route does not read its
    counts; the decision comes back in the listed order with ``scores_needed``, and ``with_counts``
    completes it exactly as the read would have (the caller reads them with other Redis work)."""
    flat = flatten(facts)
    amount, currency = flat.get("amount"), flat.get("currency")
    if type(amount) is not int or not isinstance(currency, str):
        raise InvalidRequest("facts need an integer amount and a currency", param="amount")
    version = version if version is not None else getattr(matcher, "version", None)
    if merchant is None:
        matched = shown = matcher.match(flat)
        own = ()
    elif pair is not None and pair.serves(matcher, merchant) and (both := pair.match(flat)) is not None:
        cut = len(merchant.prefix)
        matched = tuple(rid for rid in both if "/" not in rid)
        shown = tuple(rid for rid in both if "/" in rid)  # the merchant's, as the decision names them
        own = tuple(rid[cut:] for rid in shown)
        shown = matched + shown
    else:
        matched, own = matcher.match(flat), merchant.matcher.match(flat)
        shown = matched + tuple(merchant.prefix + rid for rid in own)
    layers = ((merchant.ruleset, own, merchant.prefix),) if merchant is not None else ()
    limits = combine_limits(ruleset, matched, *layers)
    merchant_version = merchant.version if merchant is not None else None

    def declined(code: str, rule: str | None, dropped=()) -> Decision:
        return Decision("decline", code, None, (), tuple(dropped), shown, 0, limits, version, rule,
                        merchant_ruleset_version=merchant_version)

    for rules, ids, prefix in ((ruleset, matched, ""), *layers):
        by_id = rules.by_id()
        for rid in ids:
            if by_id[rid].then.decline:
                return declined(by_id[rid].then.decline, prefix + rid)
    if "max_amount" in limits and amount > limits["max_amount"]["max"]:
        return declined("limit_exceeded", limits["max_amount"]["rule"])
    if "min_amount" in limits and amount < limits["min_amount"]["min"]:
        return declined("limit_exceeded", limits["min_amount"]["rule"])
    rid, then = _pick_layered(ruleset, matched, merchant, own, "routing")
    ordered: tuple[str, ...] = ()
    if then.route:
        ordered = then.route
    elif then.split:
        ordered = split_order(then.split, split_key, rid or "defaults")
    candidates, dropped = [], []
    operation, method = flat.get("type", "payment"), flat.get("payment_method.type")
    for channel in ordered:
        reason = availability.drop_reason(channel, operation=operation, currency=currency, method=method) \
            if availability is not None else None
        if reason:
            dropped.append((channel, reason))
        else:
            candidates.append(channel)
    if not candidates:
        return declined("no_route", None, dropped)
    strategy = needed = None
    if then.route and then.strategy is not None:
        if strategist is None and _is_strategist(availability):
            strategist = availability
        method_ = None if operation == "withdrawal" else method  # a payout's channel methods are pay-in methods
        if defer_scores and then.strategy.name == "success_rate" and strategist is not None:
            needed = ScoresNeeded(then.strategy, tuple(candidates), operation, currency, method_, strategist.rng)
            strategy = {"strategy": then.strategy.name}
        else:
            ordered_, strategy = order_by_strategy(then.strategy, tuple(candidates), strategist, amount=amount,
                                                   currency=currency, operation=operation, method=method_)
            candidates = list(ordered_)
    _, fee_then = _pick(ruleset, matched, "fee")  # what the platform charges: never a merchant's set
    fee = compute_fee(fee_then.fee, amount, currency)
    retry_rule, retry_then = _pick_layered(ruleset, matched, merchant, own, "retry")
    retry = retry_then.retry and {"on": retry_then.retry.on, "max": retry_then.retry.max,
                                  "rule": retry_rule or "defaults"}
    return Decision("route", None, candidates[0], tuple(candidates), tuple(dropped), shown, fee, limits, version,
                    retry=retry, strategy=strategy, merchant_ruleset_version=merchant_version, scores_needed=needed)


def with_counts(decision: Decision, counts: Mapping[str, tuple[int, int]] | None) -> Decision:
    """A decision that waited for its success-rate counts (``scores_needed``) ordered by them (None: they
    could not be read: the listed order, saying so), as ``decide`` would have; any other unchanged."""
    needed = decision.scores_needed
    if needed is None:
        return decision
    ordered, info = by_success_rate(needed.strategy, needed.channels, counts, needed.rng)
    return replace(decision, channel=ordered[0], candidates=ordered, strategy=info, scores_needed=None)
