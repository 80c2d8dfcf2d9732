"""rules.decide: the outcome resolution of contract §3, split, availability, facts."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from rules.decide import Decision, decide, facts_for, split_order
from rules.engine import CompiledRules
from rules.format import load
from rules.reference import ReferenceRules

RULES = {
    "rules": [
        {"id": "deny-low", "priority": 10, "when": {"fact": "customer.country", "eq": "KP"},
         "then": {"decline": "country_blocked"}},
        {"id": "deny-high", "priority": 500, "when": {"fact": "metadata.flag", "eq": "fraud"},
         "then": {"decline": "suspected_fraud"}},
        {"id": "vip-route", "priority": 900, "when": {"fact": "customer.id", "eq": "vip"},
         "then": {"route": ["acq_beta"], "limits": {"max_amount": 900_000}}},
        {"id": "usd-route", "priority": 100, "when": {"fact": "currency", "eq": "USD"},
         "then": {"route": ["acq_alpha", "acq_beta"], "limits": {"max_amount": 500_000, "min_amount": 100,
                                                                  "daily_count": {"per": "customer", "max": 10}}}},
        {"id": "usd-fee", "priority": 50, "when": {"fact": "currency", "eq": "USD"},
         "then": {"fee": {"percent": "2.9", "fixed": 30}, "limits": {"max_amount": 700_000, "min_amount": 50,
                                                                       "daily_count": {"per": "customer", "max": 5},
                                                                       "daily_amount": {"per": "merchant",
                                                                                        "max": 10**7}}}},
        {"id": "eur-split", "priority": 50, "when": {"fact": "currency", "eq": "EUR"},
         "then": {"split": {"acq_alpha": 70, "acq_beta": 30}}},
    ],
    "defaults": {"route": ["sandbox"], "fee": {"percent": "3.0", "fixed": 0}},
}
RS = load(RULES)
NOW = datetime(2026, 3, 7, 22, 15, tzinfo=timezone.utc)  # a Saturday


class Switches:
    def __init__(self, **reasons: str):
        self.reasons = reasons
        self.calls: list[tuple] = []

    def drop_reason(self, channel_id, *, operation, currency, method):
        self.calls.append((channel_id, operation, currency, method))
        return self.reasons.get(channel_id)


@pytest.fixture(params=["engine", "reference"])
def matcher(request):
    m = CompiledRules(RS, version=7) if request.param == "engine" else ReferenceRules(RS, version=7)
    yield m
    m.close()


def facts(amount=1000, currency="USD", customer=None, metadata=None, op="payment"):
    return facts_for(op, amount, currency, {"type": "card"}, customer or {"id": "c1"}, "m1", None, metadata, NOW)


def test_facts_for_adds_utc_hour_and_weekday():
    f = facts_for("topup", 5, "EUR", {"type": "wallet"}, {"id": "c"}, "m", "games", {"k": "v"},
                  datetime(2026, 3, 8, 1, 0, tzinfo=timezone(__import__("datetime").timedelta(hours=5))))
    assert f["hour"] == 20 and f["weekday"] == "sat" and f["merchant"] == {"id": "m", "category": "games"}


def test_route_and_fee_come_from_different_rules(matcher):
    d = decide(facts(), RS, matcher, Switches(), split_key="k")
    assert d.to_dict() == {
        "object": "routing_decision", "outcome": "route", "channel": "acq_alpha",
        "candidates": ["acq_alpha", "acq_beta"], "dropped": [], "matched_rules": ["usd-route", "usd-fee"],
        "fee": 59, "limits": {
            "max_amount": {"max": 500000, "rule": "usd-route"}, "min_amount": {"min": 100, "rule": "usd-route"},
            "daily_amount": [{"per": "merchant", "max": 10**7, "rule": "usd-fee"}],
            "daily_count": [{"per": "customer", "max": 5, "rule": "usd-fee"}]},
        "ruleset_version": 7}


def test_highest_priority_decline_wins_even_over_higher_routing(matcher):
    d = decide(facts(customer={"id": "vip", "country": "KP"}, metadata={"flag": "fraud"}), RS, matcher,
               split_key="k")
    assert (d.outcome, d.decline_code, d.declined_by) == ("decline", "suspected_fraud", "deny-high")
    assert d.matched_rules[0] == "vip-route" and d.to_dict()["decline_code"] == "suspected_fraud"
    d = decide(facts(customer={"id": "c", "country": "KP"}), RS, matcher, split_key="k")
    assert (d.decline_code, d.declined_by) == ("country_blocked", "deny-low")


def test_highest_priority_route_wins_and_defaults_apply_otherwise(matcher):
    d = decide(facts(customer={"id": "vip"}), RS, matcher, split_key="k")
    assert d.candidates == ("acq_beta",) and d.fee == 59  # fee still from usd-fee
    d = decide(facts(currency="GBP"), RS, matcher, split_key="k")
    assert (d.channel, d.fee, d.matched_rules, d.limits) == ("sandbox", 30, (), {})


def test_limits_strictest_wins_and_are_checked(matcher):
    d = decide(facts(amount=600_000), RS, matcher, split_key="k")
    assert (d.outcome, d.decline_code, d.declined_by) == ("decline", "limit_exceeded", "usd-route")
    d = decide(facts(amount=99), RS, matcher, split_key="k")
    assert (d.decline_code, d.declined_by) == ("limit_exceeded", "usd-route")
    d = decide(facts(amount=800_000, customer={"id": "vip"}), RS, matcher, split_key="k")
    assert d.limits["max_amount"] == {"max": 500000, "rule": "usd-route"} and d.outcome == "decline"


def test_availability_drops_channels_and_no_route(matcher):
    sw = Switches(acq_alpha="circuit_open")
    d = decide(facts(), RS, matcher, sw, split_key="k")
    assert d.channel == "acq_beta" and d.dropped == (("acq_alpha", "circuit_open"),)
    assert sw.calls[0] == ("acq_alpha", "payment", "USD", "card")
    d = decide(facts(), RS, matcher, Switches(acq_alpha="switched_off", acq_beta="unsupported_currency"),
               split_key="k")
    assert d.to_dict()["outcome"] == "decline" and d.decline_code == "no_route" and d.channel is None
    assert d.to_dict()["dropped"] == [{"channel": "acq_alpha", "reason": "switched_off"},
                                      {"channel": "acq_beta", "reason": "unsupported_currency"}]


def test_split_is_deterministic_and_weighted(matcher):
    first = [decide(facts(currency="EUR"), RS, matcher, split_key=f"key-{i}").candidates for i in range(200)]
    again = [decide(facts(currency="EUR"), RS, matcher, split_key=f"key-{i}").candidates for i in range(200)]
    assert first == again
    assert set(first) == {("acq_alpha", "acq_beta"), ("acq_beta", "acq_alpha")}


def test_split_within_two_percent_over_10000_keys():
    split = (("a", 50), ("b", 30), ("c", 15), ("d", 5))
    counts = Counter(split_order(split, f"pay_{i}", "rule")[0] for i in range(10_000))
    for channel, weight in split:
        assert abs(counts[channel] / 10_000 - weight / 100) <= 0.02, counts
    order = split_order(split, "x", "rule")
    assert sorted(order) == ["a", "b", "c", "d"] and len(set(order)) == 4
    rest = [c for c in ("a", "b", "c", "d") if c != order[0]]
    assert list(order[1:]) == rest  # fallbacks by weight


def test_facts_need_amount_and_currency(matcher):
    from app.domain.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        decide({"currency": "USD"}, RS, matcher, split_key="k")


def test_a_decision_leaves_no_cyclic_garbage():
    """Serving processes collect the young generation rarely (app/entrypoints/tuning.py) and the GC's
    passes are the tail of decision latency: a decision must leave nothing only the GC can free (a
    nested recursive closure in flatten did: five objects and the facts per decision). Counted in a
    fresh interpreter: the suite's own threads make garbage of their own meanwhile."""
    import subprocess
    import sys
    from pathlib import Path

    script = """
import gc
from datetime import datetime, timezone
from rules.decide import decide, facts_for
from rules.engine import CompiledRules
from rules.format import load
from tests.unit.test_rules_decide import RULES
rs = load(RULES)
matcher = CompiledRules(rs, 1)
now = datetime(2026, 3, 7, 22, 15, tzinfo=timezone.utc)
bodies = [facts_for("payment", 1000 + i, cur, {"type": "card"}, {"id": f"c{i}", "country": "US"}, "mer_1", None,
                    {"flag": "x"}, now) for i, cur in enumerate(["USD", "EUR", "GBP"] * 100)]
decide(bodies[0], rs, matcher, split_key="warm")
gc.collect()
gc.disable()
for i, f in enumerate(bodies):
    decide(f, rs, matcher, split_key=str(i))
print(gc.collect())
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0", done.stdout


def test_a_decision_is_frozen_and_its_init_takes_every_field_in_order():
    """Decision writes its fields in one go (rules/decide.py): a field added to the class must be a
    parameter of its __init__ too, in the same place."""
    import dataclasses
    import inspect

    names = [f.name for f in dataclasses.fields(Decision)]
    assert list(inspect.signature(Decision.__init__).parameters)[1:] == names
    d = Decision("route", None, "a", ("a",), (), ("r",), 5)
    assert d.limits == {} and d.scores_needed is None and d == Decision("route", None, "a", ("a",), (), ("r",), 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.fee = 6
    assert dataclasses.replace(d, fee=6).fee == 6 and d.fee == 5
