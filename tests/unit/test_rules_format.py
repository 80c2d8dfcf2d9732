"""rules.format: loading, line numbers, and one clear problem per kind of mistake."""
from __future__ import annotations

import json
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.format import RulesInvalid, load, validate
from rules.model import AnyOf, Atom

CHANNELS = {"sandbox", "acq_alpha", "acq_beta"}
DEFAULT = Path(__file__).resolve().parents[2] / "rules" / "default_rules.yaml"


def rule(when: str = "{fact: currency, eq: USD}", then: str = "{route: [sandbox]}", rid: str = "r1") -> str:
    return f"  - id: {rid}\n    priority: 1\n    when: {when}\n    then: {then}\n"


def doc(*rules: str, defaults: str = "{route: [sandbox]}") -> str:
    return "rules:\n" + "".join(rules) + f"defaults: {defaults}\n"


def test_default_rules_file_is_valid_and_loads():
    assert validate(DEFAULT, CHANNELS) == []
    rs = load(str(DEFAULT), CHANNELS)
    assert [r.id for r in rs.rules][:3] == ["block-sanctioned", "big-usd-cards", "eur-split"]
    big = rs.rules[1]
    assert big.then.fee.percent == Decimal("2.9") and big.then.route == ("acq_alpha", "acq_beta")
    assert big.line == 8 and rs.defaults.route == ("sandbox",)


def test_contract_example_loads_as_json_too():
    data = {"rules": [{"id": "a", "priority": 5, "when": {"any": [{"fact": "customer.country", "in": ["KP", "IR"]}]},
                       "then": {"decline": "country_blocked"}}],
            "defaults": {"route": ["sandbox"], "fee": {"percent": "3.0", "fixed": 0}}}
    rs = load(json.dumps(data))
    assert rs.rules[0].when == AnyOf((Atom("customer.country", "in", ("KP", "IR")),))
    assert load(data) == rs


def test_norway_stays_a_string():
    rs = load(doc(rule("{fact: customer.country, in: [NO, SE]}")))
    assert rs.rules[0].when.value == ("NO", "SE")


INVALID = [
    # (name, document, expected rule id, expected path, message fragment)
    ("unknown fact", doc(rule("{fact: colour, eq: red}")), "r1", "/rules/0/when/fact", "unknown fact 'colour'"),
    ("unknown operator", doc(rule("{fact: amount, between: 5}")), "r1", "/rules/0/when/between", "unknown operator"),
    ("two operators", doc(rule("{fact: amount, gt: 5, lt: 9}")), "r1", "/rules/0/when", "exactly one operator"),
    ("string amount", doc(rule("{fact: amount, gt: '10'}")), "r1", "/rules/0/when/gt", "amount compares with integers"),
    ("float amount", doc(rule("{fact: amount, eq: 10.5}")), "r1", "/rules/0/when/eq", "integers"),
    ("hour string", doc(rule("{fact: hour, in: ['9']}")), "r1", "/rules/0/when/in/0", "hour compares with integers"),
    ("hour range", doc(rule("{fact: hour, eq: 24}")), "r1", "/rules/0/when/eq", "hour is 0–23"),
    ("bad weekday", doc(rule("{fact: weekday, eq: monday}")), "r1", "/rules/0/when/eq", "weekday must be one of"),
    ("bad currency", doc(rule("{fact: currency, in: [USD, XXX]}")), "r1", "/rules/0/when/in/1", "unknown currency"),
    ("bad type", doc(rule("{fact: type, eq: payout}")), "r1", "/rules/0/when/eq", "type must be one of"),
    ("unquoted number", doc(rule("{fact: metadata.tier, eq: 3}")), "r1", "/rules/0/when/eq", "compares with strings"),
    ("ordering on string", doc(rule("{fact: currency, gt: USD}")), "r1", "/rules/0/when/gt", "only to amount and hour"),
    ("bad regex", doc(rule("{fact: customer.email, matches: '(abc'}")), "r1", "/rules/0/when/matches",
     "invalid regular expression"),
    ("exists not bool", doc(rule("{fact: customer.email, exists: 'yes'}")), "r1", "/rules/0/when/exists",
     "true or false"),
    ("empty in", doc(rule("{fact: currency, in: []}")), "r1", "/rules/0/when/in", "non-empty list"),
    ("unsatisfiable range", doc(rule("{all: [{fact: amount, gt: 10}, {fact: amount, lt: 5}]}")), "r1",
     "/rules/0/when", "can never be true"),
    ("unsatisfiable eq", doc(rule("{all: [{fact: currency, eq: USD}, {fact: currency, eq: EUR}]}")), "r1",
     "/rules/0/when", "can never be true"),
    ("unsatisfiable exists", doc(rule("{all: [{fact: customer.id, exists: false}, {fact: customer.id, eq: c}]}")),
     "r1", "/rules/0/when", "can never be true"),
    ("empty any", doc(rule("{any: []}")), "r1", "/rules/0/when/any", "never matches"),
    ("mixed combinator", doc(rule("{all: [], any: []}")), "r1", "/rules/0/when", "exactly one of all/any/not"),
    ("float percent", doc(rule(then="{fee: {percent: 2.9}}")), "r1", "/rules/0/then/fee/percent",
     "decimal string"),
    ("bad percent text", doc(rule(then="{fee: {percent: 'abc'}}")), "r1", "/rules/0/then/fee/percent",
     "decimal string"),
    ("fee min above max", doc(rule(then="{fee: {percent: '1', min: 9, max: 1}}")), "r1", "/rules/0/then/fee",
     "min 9 is above max 1"),
    ("negative fixed", doc(rule(then="{fee: {fixed: -1}}")), "r1", "/rules/0/then/fee/fixed", "non-negative"),
    ("split sum", doc(rule(then="{split: {acq_alpha: 70, acq_beta: 20}}")), "r1", "/rules/0/then/split",
     "sum to 90"),
    ("unknown route channel", doc(rule(then="{route: [acq_gamma]}")), "r1", "/rules/0/then/route/0",
     "unknown channel 'acq_gamma'"),
    ("unknown split channel", doc(rule(then="{split: {acq_alpha: 50, nope: 50}}")), "r1", "/rules/0/then/split/nope",
     "unknown channel 'nope'"),
    ("route and split", doc(rule(then="{route: [sandbox], split: {sandbox: 100}}")), "r1", "/rules/0/then",
     "exclusive"),
    ("decline with route", doc(rule(then="{decline: no, route: [sandbox]}")), "r1", "/rules/0/then",
     "cannot also route"),
    ("bad limit", doc(rule(then="{limits: {daily_count: {per: device, max: 3}}}")), "r1",
     "/rules/0/then/limits/daily_count", "per: customer|merchant"),
    ("limit min above max", doc(rule(then="{limits: {max_amount: 5, min_amount: 9}}")), "r1",
     "/rules/0/then/limits", "min_amount 9 is above max_amount 5"),
    ("unknown then key", doc(rule(then="{reroute: [sandbox]}")), "r1", "/rules/0/then/reroute", "unknown key"),
    ("unknown rule key", doc(rule().replace("priority: 1", "priority: 1\n    weight: 3")), "r1",
     "/rules/0/weight", "unknown rule key"),
    ("float priority", doc(rule().replace("priority: 1", "priority: 1.5")), "r1", "/rules/0/priority",
     "priority must be an integer"),
    ("missing then", "rules:\n  - id: r1\n    when: {fact: amount, gt: 1}\n", "r1", "/rules/0", "missing 'then'"),
    ("unknown top key", doc(rule()) + "extra: 1\n", None, "/extra", "unknown top-level key"),
]


@pytest.mark.parametrize("name,text,rule_id,path,fragment", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_file_reports_specific_problem(name, text, rule_id, path, fragment):
    problems = validate(text, CHANNELS)
    assert problems, name
    hits = [p for p in problems if p.path == path and fragment in p.message]
    assert hits, f"{name}: {[str(p) for p in problems]}"
    assert hits[0].rule_id == rule_id
    assert hits[0].line is not None


def test_duplicate_ids_name_both_places():
    problems = validate(doc(rule(rid="same"), rule(rid="same")))
    assert [(p.rule_id, p.path) for p in problems] == [("same", "/rules/1/id")]
    assert "first used by rules/0" in problems[0].message and problems[0].line == 6


def test_every_problem_is_reported_at_once_with_lines():
    text = textwrap.dedent("""\
        rules:
          - id: a
            when: {fact: colour, eq: red}
            then: {route: [nowhere]}
          - id: b
            when: {fact: amount, gt: "5"}
            then: {fee: {percent: 1.5}}
        """)
    problems = validate(text, CHANNELS)
    got = {(p.rule_id, p.path, p.line) for p in problems}
    assert ("a", "/rules/0/when/fact", 3) in got
    assert ("a", "/rules/0/then/route/0", 4) in got
    assert ("b", "/rules/1/when/gt", 6) in got
    assert ("b", "/rules/1/then/fee/percent", 7) in got
    with pytest.raises(RulesInvalid) as err:
        load(text, CHANNELS)
    assert len(err.value.problems) == len(problems) and err.value.code == "rules_invalid"


def test_yaml_syntax_error_has_a_line():
    problems = validate("rules:\n  - id: a\n    when: {fact: amount\n")
    assert len(problems) == 1 and problems[0].line and "not valid YAML" in problems[0].message


def test_too_many_alternatives_is_refused():
    many = "[" + ", ".join(f"m{i}" for i in range(20)) + "]"
    when = f"{{all: [{{fact: metadata.a, in: {many}}}, {{fact: metadata.b, in: {many}}}]}}"
    problems = validate(doc(rule(when)))
    assert problems and "alternatives" in problems[0].message and problems[0].rule_id == "r1"


def test_engine_fanout_limit_is_reported_before_compiling():
    rules = [rule(f"{{fact: amount, eq: {i}}}", rid=f"r{i}") for i in range(600)]
    problems = validate(doc(*rules))
    assert any("too many different tests" in p.message for p in problems)


def test_many_rules_sharing_one_condition_are_fine():
    rules = [rule("{fact: currency, eq: USD}", rid=f"r{i}") for i in range(400)]
    assert validate(doc(*rules)) == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["rules", "defaults", "id", "priority", "when", "then", "fact", "eq", "in", "all", "any",
                         "not", "route", "split", "fee", "percent", "limits", "decline", "x"]), inner, max_size=4),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(data=st.fixed_dictionaries({"rules": st.lists(json_values, max_size=3)}, optional={"defaults": json_values}))
def test_validator_never_crashes_on_garbage(data):
    problems = validate(data)
    assert all(isinstance(p.message, str) and p.path.startswith("/") or p.path == "" for p in problems)


def test_large_generated_rule_set_engine_matches_reference():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.rules import make_requests, make_rules
    from rules.engine import CompiledRules
    from rules.facts import flatten
    from rules.reference import ReferenceRules

    rs = load(make_rules(1000), CHANNELS)
    engine, reference = CompiledRules(rs), ReferenceRules(rs)
    try:
        for facts in make_requests(300, seed=5):
            flat = flatten(facts)
            assert engine.match(flat) == reference.match(flat)
    finally:
        engine.close()


def test_missing_file_is_a_problem_not_a_crash(tmp_path):
    assert "no such rule file" in validate(str(tmp_path / "nope.yaml"))[0].message
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"rules": []}))
    assert validate(path) == [] and validate(str(path)) == []


def test_the_shape_of_a_rule_file_is_checked_once_by_its_schema():
    """rules/parse.py leaves keys, types and forms to schemas/rules.schema.json and only builds the model:
    a shape problem is reported once, in the words of rules/format.py, at the field."""
    from rules import parse

    out = parse.Collector()
    assert parse.then({"reroute": 1, "decline": "Not Snake", "limits": {"daily_count": {"per": "device"}}},
                      "/then", out, None) is not None
    assert parse.fee({"percent": 2.9, "fixed": -1, "pct": 1}, "/fee", out) is None
    assert out.items == []
    problems = validate(doc(rule(then="{split: {sandbox: 0}, fee: {pct: '1'}}")), CHANNELS)
    assert sorted((p.path, p.message) for p in problems) == [
        ("/rules/0/then/fee/pct", "unknown fee key 'pct'"),
        ("/rules/0/then/split", "split takes {channel: positive integer weight}")]
