"""rules.decide with a ``cost`` or ``success_rate`` route (contract §3): the order, ties, min_samples,
exploration's share, the fallback when the inputs cannot be had, and what the decision shows."""
from __future__ import annotations

import random
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from rules.decide import decide, facts_for, with_counts
from rules.engine import CompiledRules
from rules.format import load, validate
from rules.model import Fee

NOW = datetime(2026, 3, 7, 12, 0, tzinfo=timezone.utc)
COSTS = {"acq_alpha": Fee(Decimal("1.8"), 20), "acq_beta": Fee(Decimal("1.5"), 25), "flat": Fee(Decimal(0), 40)}


def rules(route: dict) -> CompiledRules:
    return CompiledRules(load({"rules": [{"id": "r", "when": {"fact": "currency", "eq": "USD"},
                                          "then": {"route": route}}], "defaults": {"route": ["sandbox"]}}))


class Inputs:
    """A strategist with fixed costs and outcome counts (None: unavailable), seeded randomness."""

    def __init__(self, counts=None, seed: int = 7, costs=COSTS):
        self.counts, self._costs, self.rng, self.asked = counts, costs, random.Random(seed), []

    def costs(self, channels):
        return self._costs

    def outcomes(self, channels, *, window_minutes, operation, currency, method):
        self.asked.append((channels, window_minutes, operation, currency, method))
        return self.counts

    def drop_reason(self, channel_id, *, operation, currency, method):
        return None


def decision(matcher, amount: int, inputs, kind: str = "payment", instrument=None):
    facts = facts_for(kind, amount, "USD", instrument or {"type": "card"}, {"id": "c1"}, "m1", None, {}, NOW)
    return decide(facts, matcher.ruleset, matcher, inputs, split_key="k")


@pytest.mark.parametrize("amount, order, costs", [
    (100, ["acq_alpha", "acq_beta", "flat"], [22, 27, 40]),  # 26.5 rounds half-up to 27
    (1700, ["flat", "acq_alpha", "acq_beta"], [51, 51, 40]),  # 50.6 → 51 and 50.5 → 51 (half-up): a tie
    (100_000, ["flat", "acq_beta", "acq_alpha"], [1820, 1525, 40]),
])
def test_cost_orders_cheapest_first_with_fee_rounding_and_ties_in_listed_order(amount, order, costs):
    matcher = rules({"strategy": "cost", "channels": ["acq_alpha", "acq_beta", "flat"]})
    out = decision(matcher, amount, Inputs()).to_dict()
    assert out["candidates"] == order and out["channel"] == order[0]
    assert out["strategy"] == "cost"
    assert out["scores"] == {ch: {"cost": c} for ch, c in zip(["acq_alpha", "acq_beta", "flat"], costs, strict=True)}


def test_cost_tie_keeps_the_listed_order_whichever_it_is():
    for listed in (["acq_alpha", "acq_beta"], ["acq_beta", "acq_alpha"]):
        out = decision(rules({"strategy": "cost", "channels": listed}), 1700, Inputs()).to_dict()
        assert out["candidates"] == listed, out


def test_success_rate_orders_by_share_and_min_samples_scores_as_the_average():
    matcher = rules({"strategy": "success_rate", "channels": ["acq_alpha", "acq_beta", "flat"],
                     "min_samples": 10, "exploration_percent": 0, "window_minutes": 30})
    inputs = Inputs({"acq_alpha": (5, 10), "acq_beta": (19, 20), "flat": (3, 3)})
    out = decision(matcher, 1000, inputs).to_dict()
    # flat has 3 outcomes (< 10): it scores as the average of the others, (0.5 + 0.95) / 2
    assert out["candidates"] == ["acq_beta", "flat", "acq_alpha"], out
    assert out["strategy"] == "success_rate" and "exploration" not in out
    assert out["scores"] == {"acq_alpha": {"score": 0.5, "samples": 10}, "acq_beta": {"score": 0.95, "samples": 20},
                             "flat": {"score": 0.725, "samples": 3}}
    assert inputs.asked == [(("acq_alpha", "acq_beta", "flat"), 30, "payment", "USD", "card")]
    payout = decision(matcher, 1000, inputs, kind="withdrawal", instrument={"type": "bank_account"})
    assert payout.candidates == ("acq_beta", "flat", "acq_alpha")
    assert inputs.asked[-1][2:] == ("withdrawal", "USD", None)  # a payout is counted under no method


def test_success_rate_without_enough_outcomes_anywhere_keeps_the_listed_order():
    matcher = rules({"strategy": "success_rate", "channels": ["acq_beta", "acq_alpha"], "exploration_percent": 0})
    out = decision(matcher, 1000, Inputs({"acq_alpha": (19, 19)})).to_dict()  # under the default 20
    assert out["candidates"] == ["acq_beta", "acq_alpha"]
    assert out["scores"] == {"acq_beta": {"score": None, "samples": 0}, "acq_alpha": {"score": None, "samples": 19}}


def test_unavailable_outcomes_fall_back_to_the_listed_order_and_say_so():
    matcher = rules({"strategy": "success_rate", "channels": ["acq_alpha", "acq_beta"]})
    out = decision(matcher, 1000, Inputs(None)).to_dict()
    assert out["candidates"] == ["acq_alpha", "acq_beta"]
    assert out["strategy"] == "success_rate" and out["strategy_fallback"] == "redis_unavailable"
    assert "scores" not in out


def test_exploration_share_within_statistical_bounds_over_10000_seeded_decisions():
    matcher = rules({"strategy": "success_rate", "channels": ["acq_alpha", "acq_beta"], "exploration_percent": 10})
    inputs = Inputs({"acq_alpha": (20, 100), "acq_beta": (95, 100)}, seed=2026)
    explored = first_alpha = 0
    for _ in range(10_000):
        out = decision(matcher, 1000, inputs)
        explored += bool(out.strategy.get("exploration"))
        first_alpha += out.channel == "acq_alpha"
    # Binomial(10000, 0.10): sd = 30, so ±150 is five sd; half of the explored decisions put acq_alpha first.
    assert 850 <= explored <= 1150, explored
    assert abs(first_alpha - explored / 2) <= 150, (first_alpha, explored)
    one, two = Inputs(inputs.counts, seed=5), Inputs(inputs.counts, seed=5)  # a seeded source: the same orders
    assert [decision(matcher, 1000, one).candidates for _ in range(200)] == \
        [decision(matcher, 1000, two).candidates for _ in range(200)]


def test_a_deferred_read_completes_as_the_read_in_place_would_have():
    """``defer_scores``: the decision waits for its counts (read by the caller with other Redis work),
    and ``with_counts`` gives the decision the read in place gives, exploration's draws included."""
    matcher = rules({"strategy": "success_rate", "channels": ["acq_alpha", "acq_beta", "flat"],
                     "exploration_percent": 30, "min_samples": 5})
    counts = {"acq_alpha": (2, 10), "acq_beta": (9, 10), "flat": (1, 2)}
    facts = facts_for("payment", 1000, "USD", {"type": "card"}, {"id": "c1"}, "m1", None, {}, NOW)
    in_place, deferred = Inputs(counts, seed=11), Inputs(counts, seed=11)
    explored = 0
    for _ in range(300):
        waiting = decide(facts, matcher.ruleset, matcher, deferred, split_key="k", defer_scores=True)
        assert deferred.asked == [] and waiting.scores_needed is not None
        assert waiting.candidates == ("acq_alpha", "acq_beta", "flat")  # the listed order, until completed
        need = waiting.scores_needed
        assert (need.channels, need.strategy.window_minutes, need.operation, need.currency, need.method) == (
            ("acq_alpha", "acq_beta", "flat"), 15, "payment", "USD", "card")
        done = with_counts(waiting, counts)
        assert done == decision(matcher, 1000, in_place) and done.scores_needed is None
        explored += bool(done.strategy.get("exploration"))
    assert 40 <= explored <= 140  # both took exploration's draws from their (same) seeded source
    # unreadable counts: the listed order, saying so; a decision that waits for nothing is unchanged
    fallback = with_counts(decide(facts, matcher.ruleset, matcher, deferred, split_key="k", defer_scores=True), None)
    assert fallback.candidates == ("acq_alpha", "acq_beta", "flat")
    assert fallback.to_dict()["strategy_fallback"] == "redis_unavailable"
    plain = decide(facts, matcher.ruleset, matcher, None, split_key="k", defer_scores=True)
    assert plain.scores_needed is None and with_counts(plain, counts) is plain


def test_a_strategy_orders_only_the_channels_left_after_drops():
    class Dropping(Inputs):
        def drop_reason(self, channel_id, **_):
            return "switched_off" if channel_id == "flat" else None

    out = decision(rules({"strategy": "cost", "channels": ["acq_alpha", "flat", "acq_beta"]}), 100_000,
                   Dropping()).to_dict()
    assert out["candidates"] == ["acq_beta", "acq_alpha"] and list(out["scores"]) == ["acq_alpha", "acq_beta"]
    assert out["dropped"] == [{"channel": "flat", "reason": "switched_off"}]


def test_priority_and_plain_lists_show_no_strategy():
    for route in (["acq_alpha", "acq_beta"], {"strategy": "priority", "channels": ["acq_alpha", "acq_beta"]}):
        out = decision(rules(route), 100_000, Inputs()).to_dict()
        assert out["candidates"] == ["acq_alpha", "acq_beta"] and "strategy" not in out and "scores" not in out


@pytest.mark.parametrize("route, message", [
    ({"strategy": "cheapest", "channels": ["acq_alpha"]}, "route/strategy: strategy is one of priority, cost"),
    ({"strategy": "success_rate", "channels": ["acq_alpha"], "exploration_percent": 51},
     "route/exploration_percent: exploration_percent is an integer from 0 to 50"),
    ({"strategy": "success_rate", "channels": ["acq_alpha"], "window_minutes": 0},
     "route/window_minutes: window_minutes is an integer from 1 to 240"),
    ({"strategy": "cost", "channels": ["acq_alpha"], "min_samples": 5},
     "route/min_samples: min_samples applies only to strategy success_rate"),
    ({"strategy": "cost", "channels": ["acq_alpha", "nope"]}, "route/channels/1: unknown channel 'nope'"),
    ({"strategy": "cost", "channels": []}, "route/channels: route takes a non-empty list of channel ids"),
    ({"strategy": "cost", "channels": ["acq_alpha"], "colour": 1}, "route/colour: unknown route key 'colour'"),
    ("acq_alpha", "route: route takes a list of channel ids or {strategy"),
])
def test_bad_strategies_are_refused_with_their_path(route, message):
    doc = {"rules": [{"id": "r", "when": {"fact": "currency", "eq": "USD"}, "then": {"route": route}}]}
    problems = [str(p) for p in validate(doc, {"acq_alpha", "acq_beta"})]
    assert any(message in p for p in problems), problems
