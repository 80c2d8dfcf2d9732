"""Plain-Python evaluator of a RuleSet: the test oracle and the benchmark baseline.

Same interface as ``rules.engine.CompiledRules``: ``match(flat_facts) -> tuple[rule ids]``
ordered by priority (desc) then file order. ``flat_facts`` come from ``rules.facts.flatten``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rules import patterns
from rules.model import All, AnyOf, Atom, Condition, Not, RuleSet

_MISSING = object()


def test_atom(atom: Atom, facts: Mapping[str, Any]) -> bool:
    """One atom against flat typed facts (missing-fact semantics in rules/__init__.py)."""
    v = facts.get(atom.fact, _MISSING)
    op, x = atom.op, atom.value
    if v is _MISSING:
        return op in ("ne", "not_in", "not_matches") or (op == "exists" and not x)
    if op == "eq":
        return v == x and type(v) is type(x)
    if op == "ne":
        return not (v == x and type(v) is type(x))
    if op == "exists":
        return bool(x)
    if op in ("in", "not_in"):
        found = any(v == y and type(v) is type(y) for y in x)
        return found if op == "in" else not found
    if op in ("matches", "not_matches"):
        hit = isinstance(v, str) and patterns.search(x, v)
        return hit if op == "matches" else not hit
    if type(v) is not int:
        return False
    if op == "gt":
        return v > x
    if op == "gte":
        return v >= x
    if op == "lt":
        return v < x
    return v <= x


def evaluate(cond: Condition, facts: Mapping[str, Any]) -> bool:
    if isinstance(cond, Atom):
        return test_atom(cond, facts)
    if isinstance(cond, All):
        return all(evaluate(c, facts) for c in cond.items)
    if isinstance(cond, AnyOf):
        return any(evaluate(c, facts) for c in cond.items)
    if isinstance(cond, Not):
        return not evaluate(cond.item, facts)
    raise TypeError(f"not a condition: {cond!r}")


class ReferenceRules:
    """Evaluates every rule in priority order; thread-safe (no shared mutable state)."""

    kind = "reference"

    def __init__(self, ruleset: RuleSet, version: int | None = None):
        self.ruleset = ruleset
        self.version = version
        self._ordered = tuple(ruleset.rules[i] for i in ruleset.order())

    def match(self, facts: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(rule.id for rule in self._ordered if evaluate(rule.when, facts))

    def close(self) -> None:
        """Nothing to free; present for interface parity with the engine."""
