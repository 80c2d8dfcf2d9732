"""``matches`` runs in linear time (RE2): no pattern and no input can make a decision slow (issue #11, item 3).

Python's ``re`` needs exponential time for ``^(a+)+$`` against ``aaaa…!``: on the old code
these tests never finish (pytest-timeout fails them); RE2 answers in microseconds.
"""
from __future__ import annotations

import time

import pytest

from rules import patterns
from rules.decide import decide, facts_for
from rules.engine import CompiledRules
from rules.facts import flatten
from rules.format import load, validate
from rules.reference import ReferenceRules

EVIL = "a" * 10_240 + "!"  # 10 KB that ^(a+)+$ backtracks over in every way before failing
FAST = 0.5  # seconds: a functional bound, generous on a shared machine; the old code needs years


def rule_file(pattern: str) -> str:
    return ("rules:\n"
            "  - id: usd\n"
            "    priority: 1\n"
            "    when: {fact: currency, eq: USD}\n"
            "    then: {route: [sandbox]}\n"
            "  - id: pattern\n"
            "    priority: 2\n"
            "    when:\n"
            "      all:\n"
            "        - {fact: currency, eq: USD}\n"
            f"        - {{fact: customer.email, matches: '{pattern}'}}\n"
            "    then: {decline: suspicious_email}\n"
            "defaults: {route: [sandbox]}\n")


@pytest.mark.parametrize("pattern,why", [
    ("^(?!admin@)[a-z]+@", "(?!"),  # negative lookahead
    ("(?<=@)example", "(?<="),  # lookbehind
    (r"^(\w)\1", r"\1"),  # backreference
    (r"^(?P<c>\w)(?P=c)", "(?P="),  # named backreference
])
def test_validate_refuses_what_re2_cannot_take_with_its_line(pattern, why):
    problems = validate(rule_file(pattern))
    assert len(problems) == 1
    problem = problems[0]
    assert (problem.rule_id, problem.path, problem.line) == ("pattern", "/rules/1/when/all/1/matches", 11)
    assert "invalid regular expression" in problem.message and why in problem.message
    assert "RE2" in problem.message


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["engine", "reference"])
def test_backtracking_pattern_decides_quickly_against_10_kb(kind):
    ruleset = load(rule_file("^(a+)+$"))
    matcher = CompiledRules(ruleset, 1) if kind == "engine" else ReferenceRules(ruleset, 1)
    try:
        for email, declined in ((EVIL, False), (EVIL[:-1], True)):
            facts = facts_for("payment", 1000, "USD", customer={"email": email})
            started = time.perf_counter()
            decision = decide(facts, ruleset, matcher, split_key="k")
            elapsed = time.perf_counter() - started
            assert elapsed < FAST, f"{kind} took {elapsed:.3f} s"
            assert (decision.decline_code == "suspicious_email") is declined
            assert decision.matched_rules == (("pattern", "usd") if declined else ("usd",))
        assert getattr(matcher, "fallbacks", 0) == 0
    finally:
        matcher.close()


@pytest.mark.timeout(30)
def test_nested_quantifiers_do_not_slow_the_engine_either():
    ruleset = load(rule_file("(x+x+)+y"))
    engine = CompiledRules(ruleset, 1)
    try:
        facts = facts_for("payment", 1000, "USD", customer={"email": "x" * 10_240})
        started = time.perf_counter()
        assert engine.match(flatten(facts)) == ("usd",)
        assert time.perf_counter() - started < FAST
    finally:
        engine.close()


def test_a_pattern_too_complex_for_a_fast_scan_is_refused_with_its_line():
    """Linear is not enough if the constant is huge: (?i)\\pL{100} compiles to ~120,000 RE2
    instructions and took ~12 ms per 10 KB value; validate refuses it."""
    problems = validate(rule_file(r"(?i)\pL{100}z"))
    assert [(p.path, p.line) for p in problems] == [("/rules/1/when/all/1/matches", 11)]
    assert "too complex" in problems[0].message
    assert validate(rule_file(r"[\p{L}\p{N}]{10}z")) == []  # a large but reasonable one still passes


@pytest.mark.parametrize("pattern", [
    "(?:a?a?a?a?a?a?a?a?a?a?){600}",  # 12,004 instructions (under the size limit): 0.1-0.6 s per 500-byte value
    "(?:a?){300}",
    "(?:.?){200}",
    "(?:[ab]?[bc]?){400}",
])
def test_a_long_chain_of_optional_items_is_refused_with_its_line(pattern):
    """Within the size limit, such a pattern makes every DFA state thousands of instructions wide: RE2's
    DFA outgrows its memory and starts over on every search. Measured before the check: a 500-byte
    value (a metadata value the API admits) against the first pattern, 0.24 s at the median, every
    search, the same value or not."""
    problems = validate(rule_file(pattern))
    assert [(p.path, p.line) for p in problems] == [("/rules/1/when/all/1/matches", 11)]
    assert "too branchy" in problems[0].message


@pytest.mark.parametrize("pattern", [
    r"(?i)^(?:[\p{L}\p{N}]+\.)*[\p{L}\p{N}]+@",  # wide Unicode classes under (?i): fanout up to 127
    r"(?i)\pL{15}z",
    "a{0,300}b",  # a bounded repeat of one item stays narrow
    "(?:a?a?a?a?a?a?a?a?a?a?){12}",
])
def test_reasonable_patterns_stay_valid(pattern):
    assert validate(rule_file(pattern)) == []


@pytest.mark.timeout(30)
def test_validating_a_pattern_against_an_eq_value_is_linear_too():
    """The compiler checks ``eq`` + ``matches`` on one fact for satisfiability at validation."""
    text = ("rules:\n  - id: r\n    when:\n      all:\n"
            f"        - {{fact: customer.email, eq: '{'a' * 250}!'}}\n"
            "        - {fact: customer.email, matches: '^(a+)+$'}\n"
            "    then: {decline: nope}\n")
    started = time.perf_counter()
    problems = validate(text)
    assert time.perf_counter() - started < FAST
    assert [p.message for p in problems] == ["condition can never be true (contradictory tests)"]


@pytest.mark.parametrize("pattern,text,found", [
    (r"@example\.(com|org)$", "ann@example.org", True),  # the demo rule set's pattern
    (r"^\d{4}$", "2024", True),
    (r"^\d+$", "٣", False),  # RE2's \d, \w, \s are ASCII (Python's str patterns are Unicode)
    ("^x$", "x\n", False),  # RE2's $ is the end of the text (Python's also matches before a final \n)
    ("(?i)^ÉTÉ$", "été", True),  # UTF-8 and case folding beyond ASCII
    ("^.$", "\ud800", True),  # a lone surrogate (valid JSON) is matched, never an exception
])
def test_re2_semantics(pattern, text, found):
    assert patterns.problem(pattern) is None
    assert patterns.search(pattern, text) is found
