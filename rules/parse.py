"""Plain data (from YAML/JSON) → model objects, collecting every problem with its path.

Only what ``schemas/rules.schema.json`` cannot say is checked here: facts and the values each takes,
operators that need a numeric or string fact, regular expressions (RE2), conditions that can never be
true, channels, split sums, bounds between two fields, duplicates. A value whose shape the schema refuses
is skipped without a word (rules/format.py words the schema's refusal). Conditions keep their own checks
of form: the schema's condition is a oneOf over the shapes, and its refusal cannot name the shape the
author meant ("exactly one operator", "unknown operator 'between'").
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from app.domain.kinds import OperationKind
from app.domain.money import CURRENCY_EXPONENTS, MAX_AMOUNT
from rules import patterns
from rules.facts import WEEKDAYS, is_known_fact, is_numeric
from rules.model import (
    OPERATORS,
    ORDERING,
    STRATEGIES,
    All,
    AnyOf,
    Atom,
    Condition,
    Daily,
    Fee,
    Limits,
    Not,
    Retry,
    Strategy,
    Then,
)

MAX_DEPTH = 16
_PERCENT = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,6})?$")


class Collector:
    """Accumulates (rule_id, path, message) triples while parsing one document."""

    def __init__(self) -> None:
        self.items: list[tuple[str | None, str, str]] = []
        self.rule_id: str | None = None

    def add(self, path: str, message: str) -> None:
        self.items.append((self.rule_id, path, message))


def _is_int(value: Any) -> bool:
    return type(value) is int


def _check_domain(fact: str, value: Any, path: str, out: Collector) -> None:
    if fact == "currency" and value not in CURRENCY_EXPONENTS:
        out.add(path, f"unknown currency {value!r} (ISO 4217 code of a supported currency expected)")
    elif fact == "weekday" and value not in WEEKDAYS:
        out.add(path, f"weekday must be one of {', '.join(WEEKDAYS)}, got {value!r}")
    elif fact == "type" and value not in OperationKind.routed():
        out.add(path, f"type must be one of {', '.join(OperationKind.routed())}, got {value!r}")
    elif fact == "hour" and not 0 <= value <= 23:
        out.add(path, f"hour is 0–23, got {value!r}")


def _scalar(fact: str, value: Any, path: str, out: Collector, *, domain: bool = True) -> bool:
    before = len(out.items)
    if is_numeric(fact):
        if not _is_int(value):
            out.add(path, f"{fact} compares with integers, got {type(value).__name__} {value!r}")
        elif fact == "amount" and abs(value) > MAX_AMOUNT:
            out.add(path, f"amount {value} is out of range")
    elif not isinstance(value, str):
        out.add(path, f"{fact} compares with strings, got {type(value).__name__} {value!r} (quote it)")
    if domain and len(out.items) == before:
        _check_domain(fact, value, path, out)
    return len(out.items) == before


def _atom(obj: dict, path: str, out: Collector) -> Atom | None:
    fact = obj.get("fact")
    ops = [k for k in obj if k != "fact"]
    bad = [k for k in ops if k not in OPERATORS]
    for key in bad:
        out.add(f"{path}/{key}", f"unknown operator {key!r} (expected one of {', '.join(OPERATORS)})")
    ops = [k for k in ops if k in OPERATORS]
    if len(ops) != 1:
        if not bad:
            out.add(path, f"a condition takes exactly one operator, got {len(ops)}: {', '.join(ops) or 'none'}")
        return None
    op = ops[0]
    value = obj[op]
    vpath = f"{path}/{op}"
    if not is_known_fact(fact):
        out.add(f"{path}/fact", f"unknown fact {fact!r} (allowed: type, amount, currency, payment_method.*, "
                                "customer.*, merchant.id, merchant.category, metadata.*, hour, weekday)")
        return None
    if op in ("eq", "ne"):
        ok = _scalar(fact, value, vpath, out)
    elif op in ORDERING:
        if not is_numeric(fact):
            out.add(vpath, f"{op} applies only to amount and hour, not {fact}")
            return None
        ok = _scalar(fact, value, vpath, out, domain=False)
    elif op in ("in", "not_in"):
        if not isinstance(value, list) or not value:  # the schema says so (scalars)
            return None
        ok = all([_scalar(fact, v, f"{vpath}/{i}", out) for i, v in enumerate(value)])
        if ok and len(set(value)) != len(value):
            out.add(vpath, f"{op} list has duplicates")
        value = tuple(value)
    elif op == "matches":
        if is_numeric(fact):
            out.add(vpath, f"matches takes a non-empty regular expression string on a string fact ({fact} is not)")
            return None
        if not isinstance(value, str) or not value:  # the schema says so
            return None
        why = patterns.problem(value)
        if why is not None:
            out.add(vpath, f"invalid regular expression {value!r}: {why}")
            return None
        ok = True
    else:  # exists: true or false, as the schema says
        ok = isinstance(value, bool)
    return Atom(fact, op, value) if ok else None


def condition(obj: Any, path: str, out: Collector, depth: int = 0) -> Condition | None:
    """Parse one condition or combinator; ``None`` when it has problems (already recorded)."""
    if depth > MAX_DEPTH:
        out.add(path, f"conditions nest deeper than {MAX_DEPTH} levels")
        return None
    if not isinstance(obj, dict) or not obj:
        out.add(path, "a condition must be an object: {fact: ..., <operator>: ...} or all/any/not")
        return None
    combinators = [k for k in ("all", "any", "not") if k in obj]
    if "fact" in obj:
        if combinators:
            out.add(path, f"a condition cannot mix 'fact' with {combinators[0]!r}")
            return None
        return _atom(obj, path, out)
    if len(combinators) != 1 or len(obj) != 1:
        keys = ", ".join(map(str, obj))
        out.add(path, f"expected {{fact, <operator>}} or exactly one of all/any/not, got keys: {keys}")
        return None
    key = combinators[0]
    inner = obj[key]
    if key == "not":
        item = condition(inner, f"{path}/not", out, depth + 1)
        return Not(item) if item is not None else None
    if not isinstance(inner, list):
        out.add(f"{path}/{key}", f"{key} takes a list of conditions")
        return None
    if key == "any" and not inner:
        out.add(f"{path}/any", "any: [] never matches")
        return None
    items = [condition(c, f"{path}/{key}/{i}", out, depth + 1) for i, c in enumerate(inner)]
    if any(i is None for i in items):
        return None
    return All(tuple(items)) if key == "all" else AnyOf(tuple(items))


def _minor(obj: dict, key: str) -> int | None:
    value = obj.get(key)
    return value if _is_int(value) and 0 <= value <= MAX_AMOUNT else None


def fee(obj: Any, path: str, out: Collector) -> Fee | None:
    if not isinstance(obj, dict):
        return None
    percent = obj.get("percent", "0")
    percent = Decimal(percent) if isinstance(percent, str) and _PERCENT.match(percent) else None
    fixed, low, high = (_minor(obj, k) for k in ("fixed", "min", "max"))
    if low is not None and high is not None and low > high:
        out.add(path, f"fee min {low} is above max {high}")
    return Fee(percent, fixed or 0, low, high) if percent is not None else None


def _daily(obj: Any) -> Daily | None:
    if isinstance(obj, dict) and obj.get("per") in ("customer", "merchant") and _minor(obj, "max") is not None:
        return Daily(obj["per"], obj["max"])
    return None


def limits(obj: Any, path: str, out: Collector) -> Limits | None:
    if not isinstance(obj, dict):
        return None
    hi, lo = _minor(obj, "max_amount"), _minor(obj, "min_amount")
    if hi is not None and lo is not None and lo > hi:
        out.add(path, f"min_amount {lo} is above max_amount {hi}")
    return Limits(hi, lo, _daily(obj.get("daily_amount")), _daily(obj.get("daily_count")))


def retry(obj: Any, path: str, out: Collector) -> Retry | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("on"), list) or not obj["on"] \
            or not all(isinstance(code, str) for code in obj["on"]):
        return None  # the schema says what is wrong
    if len(set(obj["on"])) != len(obj["on"]):
        out.add(f"{path}/on", "retry.on lists a code twice")
    limit = obj.get("max", 1)
    return Retry(tuple(obj["on"]), limit) if _is_int(limit) and limit >= 1 else None


def then(obj: Any, path: str, out: Collector, known: set[str] | None) -> Then | None:
    """Parse a ``then`` (or the ``defaults``: which keys each takes is the schema's to say)."""
    if not isinstance(obj, dict):
        return None
    decline = obj.get("decline")
    if decline is not None and ("route" in obj or "split" in obj or "fee" in obj or "retry" in obj):
        out.add(path, "a declining rule cannot also route, split, set a fee or retry")
    route = split = None
    r = obj.get("route")
    rpath = f"{path}/route"
    strategy_ = strategy(r, rpath, out) if isinstance(r, dict) else None
    if isinstance(r, dict):
        r, rpath = r.get("channels"), f"{rpath}/channels"
    if isinstance(r, list) and r and all(isinstance(c, str) and c for c in r):
        if len(set(r)) != len(r):
            out.add(rpath, "route lists a channel twice")
        route = tuple(r)
    s = obj.get("split")
    if isinstance(s, dict) and s and all(_is_int(w) and w > 0 for w in s.values()):
        if sum(s.values()) != 100:
            out.add(f"{path}/split", f"split weights sum to {sum(s.values())}, not 100")
        else:
            split = tuple((str(k), v) for k, v in s.items())
    for i, ch in enumerate(route or ()):
        if known is not None and ch not in known:
            out.add(f"{rpath}/{i}", f"unknown channel {ch!r}")
    for ch, _ in split or ():
        if known is not None and ch not in known:
            out.add(f"{path}/split/{ch}", f"unknown channel {ch!r}")
    fee_ = fee(obj["fee"], f"{path}/fee", out) if "fee" in obj else None
    lim = limits(obj["limits"], f"{path}/limits", out) if "limits" in obj else None
    retry_ = retry(obj["retry"], f"{path}/retry", out) if "retry" in obj else None
    return Then(decline if isinstance(decline, str) else None, route, split, fee_, lim, retry_,
                strategy_ if route is not None else None)


_TUNING = {"window_minutes": (1, 240), "min_samples": (1, 100_000), "exploration_percent": (0, 50)}


def strategy(obj: dict, path: str, out: Collector) -> Strategy | None:
    """A route's ``{strategy, channels, ...}``: its Strategy (None for ``priority``, the listed order).
    The schema says the shape; here only that the tuning keys belong to ``success_rate``."""
    name = obj.get("strategy")
    if name not in STRATEGIES:
        return None
    given = {k: obj[k] for k in _TUNING if k in obj}
    if name != "success_rate":
        for key in given:
            out.add(f"{path}/{key}", f"{key} applies only to strategy success_rate")
        return None if name == "priority" else Strategy(name)
    if not all(_is_int(v) and _TUNING[k][0] <= v <= _TUNING[k][1] for k, v in given.items()):
        return None  # the schema says what is wrong
    return Strategy(name, **given)
