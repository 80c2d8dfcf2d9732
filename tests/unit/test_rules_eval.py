"""Both evaluators (durable-rules engine and the Python reference) give the same answers."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.engine import CompiledRules
from rules.facts import flatten
from rules.format import load
from rules.model import All, AnyOf, Atom, Not, Rule, RuleSet, Then
from rules.reference import ReferenceRules

FACTS = {"type": "payment", "amount": 1500, "currency": "USD", "hour": 9, "weekday": "tue",
         "payment_method": {"type": "card", "brand": "visa"}, "customer": {"id": "c1", "country": "FR",
                                                                         "email": "a.b@example.com"},
         "merchant": {"id": "m1"}, "metadata": {}}

CASES = [
    # (condition, matches FACTS?)
    ({"fact": "currency", "eq": "USD"}, True),
    ({"fact": "currency", "eq": "EUR"}, False),
    ({"fact": "customer.email", "eq": "x"}, False),
    ({"fact": "currency", "ne": "EUR"}, True),
    ({"fact": "currency", "ne": "USD"}, False),
    ({"fact": "metadata.tier", "ne": "gold"}, True),  # missing → ne is true
    ({"fact": "amount", "ne": 5}, True),
    ({"fact": "amount", "gt": 1499}, True),
    ({"fact": "amount", "gt": 1500}, False),
    ({"fact": "amount", "gte": 1500}, True),
    ({"fact": "amount", "gte": 1501}, False),
    ({"fact": "amount", "lt": 1501}, True),
    ({"fact": "amount", "lt": 1500}, False),
    ({"fact": "amount", "lte": 1500}, True),
    ({"fact": "hour", "lte": 8}, False),
    ({"fact": "customer.country", "in": ["DE", "FR"]}, True),
    ({"fact": "customer.country", "in": ["DE", "IT"]}, False),
    ({"fact": "customer.segment", "in": ["a"]}, False),
    ({"fact": "customer.country", "not_in": ["DE", "IT"]}, True),
    ({"fact": "customer.country", "not_in": ["FR"]}, False),
    ({"fact": "customer.segment", "not_in": ["a"]}, True),
    ({"fact": "customer.email", "matches": r"@example\.com$"}, True),
    ({"fact": "customer.email", "matches": r"^\d+"}, False),
    ({"fact": "customer.email", "matches": r"^a\.b@"}, True),
    ({"fact": "customer.phone", "matches": ".*"}, False),
    ({"fact": "customer.email", "exists": True}, True),
    ({"fact": "customer.phone", "exists": True}, False),
    ({"fact": "customer.phone", "exists": False}, True),
    ({"fact": "customer.email", "exists": False}, False),
    ({"all": []}, True),
    ({"all": [{"fact": "currency", "eq": "USD"}, {"fact": "amount", "gt": 1000}]}, True),
    ({"all": [{"fact": "currency", "eq": "USD"}, {"fact": "amount", "gt": 2000}]}, False),
    ({"any": [{"fact": "currency", "eq": "EUR"}, {"fact": "amount", "gt": 1000}]}, True),
    ({"any": [{"fact": "currency", "eq": "EUR"}, {"fact": "amount", "gt": 2000}]}, False),
    ({"not": {"fact": "currency", "eq": "EUR"}}, True),
    ({"not": {"fact": "amount", "gt": 100}}, False),
    ({"not": {"fact": "metadata.n", "exists": True}}, True),
    ({"not": {"fact": "customer.email", "matches": "example"}}, False),
    ({"not": {"fact": "customer.phone", "matches": "1"}}, True),
    ({"not": {"all": [{"fact": "currency", "eq": "USD"}, {"fact": "weekday", "eq": "tue"}]}}, False),
    ({"not": {"any": [{"fact": "currency", "eq": "EUR"}, {"fact": "weekday", "in": ["sat", "sun"]}]}}, True),
    ({"not": {"not": {"fact": "type", "eq": "payment"}}}, True),
    ({"all": [{"fact": "metadata.x", "exists": False}, {"fact": "metadata.y", "ne": "1"}]}, True),
]


@pytest.mark.parametrize("cond,expected", CASES, ids=[str(c[0])[:60] for c in CASES])
def test_operator_on_both_evaluators(cond, expected):
    rs = load({"rules": [{"id": "r", "when": cond, "then": {"route": ["sandbox"]}}]})
    engine = CompiledRules(rs)
    try:
        flat = flatten(FACTS)
        assert ReferenceRules(rs).match(flat) == (("r",) if expected else ())
        assert engine.match(flat) == (("r",) if expected else ())
        assert engine.fallbacks == 0
    finally:
        engine.close()


def test_order_is_priority_then_file_order():
    rules = [{"id": f"r{i}", "priority": p, "when": {"fact": "currency", "eq": "USD"}, "then": {"route": ["s"]}}
             for i, p in enumerate([1, 5, 5, -3, 100])]
    rs = load({"rules": rules})
    engine = CompiledRules(rs)
    assert engine.match(flatten(FACTS)) == ReferenceRules(rs).match(flatten(FACTS)) == ("r4", "r1", "r2", "r0", "r3")
    engine.close()


def test_engine_falls_back_when_too_many_tests_match_at_once():
    rules = [{"id": f"r{i}", "when": {"fact": "amount", "gt": i}, "then": {"route": ["s"]}} for i in range(100)]
    rs = load({"rules": rules})
    engine = CompiledRules(rs)
    flat = flatten(FACTS)
    assert engine.match(flat) == ReferenceRules(rs).match(flat)
    assert engine.fallbacks == 1
    small = flatten({**FACTS, "amount": 10})
    assert engine.match(small) == tuple(f"r{i}" for i in range(10))
    engine.close()


def test_closed_engine_still_answers_correctly():
    rs = load({"rules": [{"id": "r", "when": {"fact": "currency", "eq": "USD"}, "then": {"route": ["s"]}}]})
    engine = CompiledRules(rs)
    engine.close()
    engine.close()
    assert engine.match(flatten(FACTS)) == ("r",)


# ---- differential test over generated rule sets and requests --------------------------------

STRING_FACTS = {"currency": ["USD", "EUR", "JPY"], "type": ["payment", "refund", "withdrawal"],
                "payment_method.type": ["card", "wallet"], "customer.country": ["FR", "DE", "NO", ""],
                "metadata.tier": ["gold", "x", "é"], "weekday": ["mon", "sat"]}
INT_FACTS = {"amount": [0, 1, 99, 100, 101, 10**6], "hour": [0, 9, 23]}


def _atom() -> st.SearchStrategy:
    s_fact = st.sampled_from(sorted(STRING_FACTS))
    i_fact = st.sampled_from(sorted(INT_FACTS))
    string_atom = s_fact.flatmap(lambda f: st.one_of(
        st.tuples(st.just(f), st.sampled_from(["eq", "ne"]), st.sampled_from(STRING_FACTS[f])),
        st.tuples(st.just(f), st.sampled_from(["in", "not_in"]),
                  st.lists(st.sampled_from(STRING_FACTS[f]), min_size=1, max_size=3, unique=True).map(tuple)),
        st.tuples(st.just(f), st.just("matches"), st.sampled_from(["^[A-Z]{3}$", "o", r"\w+$", "^$"])),
        st.tuples(st.just(f), st.just("exists"), st.booleans())))
    int_atom = i_fact.flatmap(lambda f: st.one_of(
        st.tuples(st.just(f), st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]), st.sampled_from(INT_FACTS[f])),
        st.tuples(st.just(f), st.sampled_from(["in", "not_in"]),
                  st.lists(st.sampled_from(INT_FACTS[f]), min_size=1, max_size=3, unique=True).map(tuple)),
        st.tuples(st.just(f), st.just("exists"), st.booleans())))
    return st.one_of(string_atom, int_atom).map(lambda t: Atom(*t))


conditions = st.recursive(_atom(), lambda inner: st.one_of(
    st.lists(inner, min_size=1, max_size=3).map(lambda xs: All(tuple(xs))),
    st.lists(inner, min_size=1, max_size=3).map(lambda xs: AnyOf(tuple(xs))),
    inner.map(Not)), max_leaves=6)


def _facts() -> st.SearchStrategy:
    entries = [st.tuples(st.just(k), st.one_of(st.none(), st.sampled_from(v))) for k, v in STRING_FACTS.items()]
    entries += [st.tuples(st.just(k), st.one_of(st.none(), st.sampled_from(v))) for k, v in INT_FACTS.items()]
    return st.tuples(*entries).map(lambda kv: {k: v for k, v in kv if v is not None})


@settings(max_examples=int(os.environ.get("RULES_DIFF_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(conds=st.lists(st.tuples(conditions, st.integers(-2, 2)), min_size=1, max_size=8),
       requests=st.lists(_facts(), min_size=1, max_size=25))
def test_engine_agrees_with_reference(conds, requests):
    from rules.compiler import TooComplex, dnf

    rules = []
    for i, (cond, priority) in enumerate(conds):
        try:
            if not dnf(cond):
                continue  # never true: the validator refuses such rules
        except TooComplex:
            continue
        rules.append(Rule(f"r{i}", priority, cond, Then(route=("s",)), index=len(rules)))
    rs = RuleSet(tuple(rules))
    engine, reference = CompiledRules(rs), ReferenceRules(rs)
    try:
        for req in requests:
            flat = flatten(req)
            assert engine.match(flat) == reference.match(flat), (req, rs)
    finally:
        engine.close()
