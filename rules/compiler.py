"""RuleSet → durable-rules ruleset JSON, plus the engine-limit checks.

How a rule becomes engine rules:

1. ``not`` is pushed down to the atoms (De Morgan); a negated ordering test keeps the
   missing-fact semantics: ``not (amount gt 5)`` is ``amount missing or amount lte 5``.
2. The condition is expanded to a disjunction of conjunctions of *literals* (DNF):
   ``in`` becomes one alternative per value, ``ne``/``not_in`` become ``missing | $neq…``.
   Contradictory conjunctions (``eq A`` and ``eq B``, ``gt 10`` and ``lt 5``, ``missing`` and
   ``eq``…) are dropped; a rule left with none can never match and is reported.
3. Every distinct conjunction is one engine rule ``t<N>`` (a flat ``$and`` chain) shared by
   all the rules that contain it; literals are ordered most-shared first so the alpha network
   shares prefixes. ``matches`` is never sent to the engine (``$mt`` mishandles ``\\d`` and
   ``^``, leaks per reload, and nothing bounds its running time): it is a post-filter on the
   engine's candidates, ``rules.patterns.search`` (RE2, linear time, ``re.search`` semantics).
4. Facts reach the engine as ``p<i>`` properties (only the paths its tests use), typed by
   ``rules.facts``, plus ``_r: 1``; a conjunction made only of "missing" tests also requires
   ``_r`` so the session's own state fact never matches it. A priming rule (``_p``) fires
   once when the ruleset is created.

Limits checked here (from the engine's source and measurements): ≤ 4,095 engine rules,
≤ 500 hashed and ≤ 120 "missing" children per alpha node (512 hangs the process),
≤ 256 alternatives per rule, ≤ 240 distinct fact paths.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rules import patterns
from rules.facts import is_numeric
from rules.model import All, AnyOf, Atom, Condition, Not, Problem, RuleSet

MAX_ENGINE_RULES = 4095
MAX_TERMS_PER_RULE = 256
MAX_HASHED_CHILDREN = 500
MAX_NEX_CHILDREN = 120
MAX_PROPERTIES = 240

Literal = tuple  # (op, path, value): op in eq neq gt gte lt lte ex nex (engine) or mt nmt (Python post-filter)
_POST = ("mt", "nmt")
_NEGATE = {"eq": "ne", "ne": "eq", "in": "not_in", "not_in": "in", "matches": "not_matches",
           "not_matches": "matches"}
_NEG_ORDER = {"gt": "lte", "gte": "lt", "lt": "gte", "lte": "gt"}


class TooComplex(Exception):
    """A condition expands to more alternatives than the engine can take."""


def negate(cond: Condition) -> Condition:
    """``not cond`` with the negation pushed to the atoms."""
    if isinstance(cond, Not):
        return cond.item
    if isinstance(cond, All):
        return AnyOf(tuple(negate(c) for c in cond.items))
    if isinstance(cond, AnyOf):
        return All(tuple(negate(c) for c in cond.items))
    if cond.op in _NEGATE:
        return Atom(cond.fact, _NEGATE[cond.op], cond.value)
    if cond.op == "exists":
        return Atom(cond.fact, "exists", not cond.value)
    return AnyOf((Atom(cond.fact, "exists", False), Atom(cond.fact, _NEG_ORDER[cond.op], cond.value)))


def _atom_dnf(a: Atom) -> list[frozenset]:
    p, v = a.fact, a.value
    if a.op == "eq":
        return [frozenset({("eq", p, v)})]
    if a.op == "ne":
        return [frozenset({("nex", p, None)}), frozenset({("neq", p, v)})]
    if a.op in ("gt", "gte", "lt", "lte"):
        return [frozenset({(a.op, p, v)})]
    if a.op == "in":
        return [frozenset({("eq", p, x)}) for x in dict.fromkeys(v)]
    if a.op == "not_in":
        return [frozenset({("nex", p, None)}), frozenset(("neq", p, x) for x in v)]
    if a.op == "exists":
        return [frozenset({("ex" if v else "nex", p, None)})]
    return [frozenset({("mt" if a.op == "matches" else "nmt", p, v)})]


def satisfiable(term: frozenset) -> bool:
    """False when the conjunction of literals can never hold (per fact path)."""
    by_path: dict[str, list] = {}
    for op, p, v in term:
        by_path.setdefault(p, []).append((op, v))
    for p, lits in by_path.items():
        ops = {op for op, _ in lits}
        if "nex" in ops and ops - {"nex", "nmt"}:
            return False
        eqs = {v for op, v in lits if op == "eq"}
        neqs = {v for op, v in lits if op == "neq"}
        if len(eqs) > 1 or eqs & neqs:
            return False
        if is_numeric(p):
            lo, hi = -(2**63), 2**63
            for op, v in lits:
                if op in ("gt", "gte"):
                    lo = max(lo, v + 1 if op == "gt" else v)
                elif op in ("lt", "lte"):
                    hi = min(hi, v - 1 if op == "lt" else v)
            if lo > hi or any(not lo <= e <= hi for e in eqs) or (lo == hi and lo in neqs):
                return False
        for op, v in lits:
            if eqs and op in _POST and isinstance(next(iter(eqs)), str):
                found = patterns.search(v, next(iter(eqs)))
                if found != (op == "mt"):
                    return False
    return True


def _simplify(term: frozenset) -> frozenset:
    informative = {p for op, p, _ in term if op not in ("ex", "nex", "nmt")}
    return frozenset(lit for lit in term if not (lit[0] == "ex" and lit[1] in informative))


def dnf(cond: Condition, limit: int = MAX_TERMS_PER_RULE) -> list[frozenset]:
    """Satisfiable conjunctions of literals whose disjunction is ``cond``; ``TooComplex`` over ``limit``."""
    if isinstance(cond, Not):
        return dnf(negate(cond.item), limit)
    if isinstance(cond, Atom):
        terms = _atom_dnf(cond)
    elif isinstance(cond, AnyOf):
        terms = [t for c in cond.items for t in dnf(c, limit)]
    else:
        terms = [frozenset()]
        for c in cond.items:
            sub = dnf(c, limit)
            terms = [a | b for a in terms for b in sub if satisfiable(a | b)]
            if len(terms) > limit:
                raise TooComplex(len(terms))
    out = list(dict.fromkeys(_simplify(t) for t in terms if satisfiable(t)))
    if len(out) > limit:
        raise TooComplex(len(out))
    return out


@dataclass(frozen=True)
class Plan:
    """The compiled form: engine JSON plus what maps engine rule names back to our rules."""

    ruleset: RuleSet
    props: dict[str, str]  # fact path → engine property name
    definition: dict[str, Any]  # durable-rules ruleset definition (without "run")
    targets: dict[str, tuple[tuple[int, tuple[Literal, ...]], ...]]  # engine rule → (rule index, post-filters)
    chains: dict[str, tuple[Literal, ...]]  # engine rule → its ordered engine literals

    def to_json(self) -> str:
        return json.dumps(self.definition, ensure_ascii=False, separators=(",", ":"))


def _literal_json(lit: Literal, props: dict[str, str]) -> dict:
    op, p, v = lit
    name = "_r" if p == "_r" else props[p]
    if op == "eq":
        return {name: v}
    if op in ("ex", "nex"):
        return {f"${op}": {name: 1}}
    return {f"${op}": {name: v}}


def _rule_terms(ruleset: RuleSet, problems: list[Problem] | None) -> list[list[frozenset]]:
    all_terms = []
    for rule in ruleset.rules:
        path = f"/rules/{rule.index}/when"
        try:
            terms = dnf(rule.when)
        except TooComplex as exc:
            if problems is None:
                raise
            problems.append(Problem(rule.id, path, f"condition expands to more than {MAX_TERMS_PER_RULE} alternatives "
                                                   f"({exc.args[0]}+); split the rule or shorten in-lists"))
            terms = []
        else:
            if not terms and problems is not None:
                problems.append(Problem(rule.id, path, "condition can never be true (contradictory tests)"))
        all_terms.append(terms)
    return all_terms


def plan(ruleset: RuleSet, problems: list[Problem] | None = None) -> Plan:
    """Compile; with ``problems`` given, limit violations are appended there instead of raised."""
    rule_terms = _rule_terms(ruleset, problems)
    paths = sorted({lit[1] for terms in rule_terms for t in terms for lit in t})
    props = {p: f"p{i}" for i, p in enumerate(paths)}
    freq: Counter = Counter(lit for terms in rule_terms for t in terms for lit in t if lit[0] not in _POST)
    grouped: dict[tuple, list[tuple[int, tuple]]] = {}
    for index, terms in enumerate(rule_terms):
        for term in terms:
            chain = sorted((lit for lit in term if lit[0] not in _POST), key=lambda lit: (-freq[lit], repr(lit)))
            if all(lit[0] == "nex" for lit in chain):
                chain.insert(0, ("eq", "_r", 1))
            post = tuple(sorted((lit for lit in term if lit[0] in _POST), key=repr))
            grouped.setdefault(tuple(chain), []).append((index, post))
    definition: dict[str, Any] = {"prime": {"all": [{"m": {"_p": 1}}]}}
    targets, chains = {}, {}
    for n, (chain, users) in enumerate(grouped.items()):
        name = f"t{n}"
        definition[name] = {"all": [{"m": {"$and": [_literal_json(lit, props) for lit in chain]}}]}
        targets[name] = tuple(dict.fromkeys(users))
        chains[name] = chain
    result = Plan(ruleset, props, definition, targets, chains)
    found = _limit_problems(result)
    if found and problems is None:
        raise TooComplex(found[0].message)
    if problems is not None:
        problems.extend(found)
    return result


def _limit_problems(p: Plan) -> list[Problem]:
    out: list[Problem] = []
    rules = p.ruleset.rules
    if len(p.chains) > MAX_ENGINE_RULES:
        out.append(Problem(None, "/rules", f"rule set compiles to {len(p.chains)} engine rules "
                                           f"(limit {MAX_ENGINE_RULES}); merge or simplify rules"))
    if len(p.props) > MAX_PROPERTIES:
        out.append(Problem(None, "/rules", f"rules use {len(p.props)} distinct facts (limit {MAX_PROPERTIES})"))
    children: dict[tuple, tuple[set, set]] = {}
    reported: set[tuple] = set()
    for name, chain in p.chains.items():
        for depth, lit in enumerate(chain):
            parent = chain[:depth]
            hashed, nex = children.setdefault(parent, (set(), set()))
            (nex if lit[0] == "nex" else hashed).add(lit)
            over = len(hashed) > MAX_HASHED_CHILDREN or len(nex) > MAX_NEX_CHILDREN
            if over and parent not in reported:
                reported.add(parent)
                rule = rules[p.targets[name][0][0]]
                where = " and ".join(f"{q} {op} {v!r}" for op, q, v in parent) or "the top level"
                out.append(Problem(rule.id, f"/rules/{rule.index}/when",
                                   f"too many different tests after {where} (engine limit: {MAX_HASHED_CHILDREN} "
                                   f"per node, {MAX_NEX_CHILDREN} 'missing' tests); add a shared test such as "
                                   "type or currency to these rules"))
    return out


def engine_problems(ruleset: RuleSet) -> list[Problem]:
    """Problems that would make the engine refuse, abort or hang on this rule set."""
    problems: list[Problem] = []
    plan(ruleset, problems)
    return problems
