"""The routing decision of contract §1/§3, from facts, a rule set and a matcher.

``matcher`` is ``rules.engine.CompiledRules`` or ``rules.reference.ReferenceRules`` (same
``match(flat_facts)``); ``availability`` answers ``drop_reason(channel, *, operation,
currency, method) -> str | None``. Order of outcomes: the highest-priority ``decline`` rule;
then ``max_amount``/``min_amount`` (``limit_exceeded``, naming the rule); then routing, where
no channel left gives ``no_route``. Daily limits are enforced later by ``rules.limits.reserve``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.domain.errors import InvalidRequest
from rules.facts import facts_for, flatten
from rules.fees import compute_fee
from rules.model import RuleSet

__all__ = ["Availability", "Decision", "decide", "facts_for", "combine_limits", "split_order", "sources"]


class Availability(Protocol):
    def drop_reason(self, channel_id: str, *, operation: str, currency: str, method: str | None) -> str | None:
        """Why ``channel_id`` cannot take this operation now ("switched_off", "circuit_open", ...), or None."""


class Matcher(Protocol):
    version: int | None

    def match(self, facts: Mapping[str, Any]) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Decision:
    """A routing decision; ``to_dict()`` is the contract's ``routing_decision`` object."""

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
        if self.retry is not None:
            out["retry"] = {"on": list(self.retry["on"]), "max": self.retry["max"], "rule": self.retry["rule"]}
        return out


def combine_limits(ruleset: RuleSet, matched: tuple[str, ...]) -> dict:
    """Limits of all matched rules, strictest winning, each naming the rule that set it.

    ``{"max_amount": {"max", "rule"}, "min_amount": {"min", "rule"},
    "daily_amount": [{"per", "max", "rule"}], "daily_count": [...]}`` (keys only when set).
    """
    by_id = ruleset.by_id()
    out: dict[str, Any] = {}
    daily: dict[str, dict[str, dict]] = {"daily_amount": {}, "daily_count": {}}
    for rid in matched:  # priority order: on ties the higher-priority rule keeps the credit
        lim = by_id[rid].then.limits
        if lim is None:
            continue
        if lim.max_amount is not None and ("max_amount" not in out or lim.max_amount < out["max_amount"]["max"]):
            out["max_amount"] = {"max": lim.max_amount, "rule": rid}
        if lim.min_amount is not None and ("min_amount" not in out or lim.min_amount > out["min_amount"]["min"]):
            out["min_amount"] = {"min": lim.min_amount, "rule": rid}
        for key in daily:
            d = getattr(lim, key)
            if d is not None and (d.per not in daily[key] or d.max < daily[key][d.per]["max"]):
                daily[key][d.per] = {"per": d.per, "max": d.max, "rule": rid}
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


def _pick(ruleset: RuleSet, matched: tuple[str, ...], attr: str) -> tuple[str | None, Any]:
    by_id = ruleset.by_id()
    for rid in matched:
        then = by_id[rid].then
        value = then.route or then.split if attr == "routing" else getattr(then, attr)
        if value:
            return rid, then
    return None, ruleset.defaults


def sources(ruleset: RuleSet, matched: tuple[str, ...]) -> dict:
    """Which rule gave the routing and which the fee (``"defaults"`` when none did), and that fee spec:
    the "why" beside a decision (the admin UI's simulate)."""
    route_rule, _ = _pick(ruleset, matched, "routing")
    fee_rule, then = _pick(ruleset, matched, "fee")
    return {"routing": route_rule or "defaults", "fee": fee_rule or "defaults", "fee_spec": then.fee}


def decide(facts: Mapping[str, Any], ruleset: RuleSet, matcher: Matcher, availability: Availability | None = None,
           *, split_key: str, version: int | None = None) -> Decision:
    """Evaluate every rule and resolve the outcome (contract §3). Never raises for a decline."""
    flat = flatten(facts)
    amount, currency = flat.get("amount"), flat.get("currency")
    if type(amount) is not int or not isinstance(currency, str):
        raise InvalidRequest("facts need an integer amount and a currency", param="amount")
    version = version if version is not None else getattr(matcher, "version", None)
    matched = matcher.match(flat)
    by_id = ruleset.by_id()
    limits = combine_limits(ruleset, matched)

    def declined(code: str, rule: str | None, dropped=()) -> Decision:
        return Decision("decline", code, None, (), tuple(dropped), matched, 0, limits, version, rule)

    for rid in matched:
        if by_id[rid].then.decline:
            return declined(by_id[rid].then.decline, rid)
    if "max_amount" in limits and amount > limits["max_amount"]["max"]:
        return declined("limit_exceeded", limits["max_amount"]["rule"])
    if "min_amount" in limits and amount < limits["min_amount"]["min"]:
        return declined("limit_exceeded", limits["min_amount"]["rule"])
    rid, then = _pick(ruleset, matched, "routing")
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
    _, fee_then = _pick(ruleset, matched, "fee")
    fee = compute_fee(fee_then.fee, amount, currency)
    retry_rule, retry_then = _pick(ruleset, matched, "retry")
    retry = retry_then.retry and {"on": retry_then.retry.on, "max": retry_then.retry.max,
                                  "rule": retry_rule or "defaults"}
    return Decision("route", None, candidates[0], tuple(candidates), tuple(dropped), matched, fee, limits, version,
                    retry=retry)
