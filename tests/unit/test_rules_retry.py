"""``retry`` in rule files (contract §3): parsed, checked, and resolved like ``route`` (the highest-priority
matching rule that has one, else ``defaults``)."""
import pytest

from rules import format as rules_format
from rules.decide import decide
from rules.model import Retry
from rules.reference import ReferenceRules

RULES = """
rules:
  - id: big
    priority: 100
    when: {all: [{fact: amount, gte: 1000}]}
    then: {route: [a, b], retry: {on: [issuer_unavailable, try_again_later], max: 2}}
  - id: fee-only
    priority: 200
    when: {all: [{fact: amount, gte: 5000}]}
    then: {fee: {percent: "1", fixed: 0}}
defaults: {route: [a], retry: {on: [issuer_unavailable]}}
"""


def decision(amount: int, source: str = RULES) -> dict:
    ruleset = rules_format.load(source)
    facts = {"type": "payment", "amount": amount, "currency": "USD"}
    return decide(facts, ruleset, ReferenceRules(ruleset), split_key="k").to_dict()


def test_retry_is_parsed_with_max_defaulting_to_one():
    ruleset = rules_format.load(RULES)
    assert ruleset.rules[0].then.retry == Retry(("issuer_unavailable", "try_again_later"), 2)
    assert ruleset.defaults.retry == Retry(("issuer_unavailable",), 1)


def test_retry_comes_from_the_highest_priority_rule_that_has_one_else_defaults():
    assert decision(6000)["retry"] == {"on": ["issuer_unavailable", "try_again_later"], "max": 2, "rule": "big"}
    assert decision(10)["retry"] == {"on": ["issuer_unavailable"], "max": 1, "rule": "defaults"}
    assert "retry" not in decision(10, "rules: []\ndefaults: {route: [a]}")


@pytest.mark.parametrize("retry,where,words", [
    ("{on: []}", "/retry/on", "non-empty list"),
    ("{on: [Issuer]}", "/retry/on/0", "snake_case"),
    ("{on: [a], max: 0}", "/retry/max", "1 to 10"),
    ("{on: [a], max: 11}", "/retry/max", "1 to 10"),
    ("{on: [a], after: 2}", "/retry/after", "unknown retry key"),
    ("{max: 1}", "/retry", "retry must be an object"),
    ("{on: [a, a]}", "/retry/on", "twice"),
])
def test_a_bad_retry_is_refused_at_its_field(retry, where, words):
    problems = rules_format.validate(f"rules: [{{id: x, when: {{all: []}}, then: {{route: [a], retry: {retry}}}}}]")
    assert [(p.path, words in p.message) for p in problems] == [(f"/rules/0/then{where}", True)], problems


def test_a_declining_rule_cannot_retry():
    problems = rules_format.validate("rules: [{id: x, when: {all: []}, then: {decline: nope, retry: {on: [a]}}}]")
    assert [p.message for p in problems] == ["a declining rule cannot also route, split, set a fee or retry"]
