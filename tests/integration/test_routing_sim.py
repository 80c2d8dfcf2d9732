"""bench/routing_sim.py (issue #17, item 6): a short seeded drift scenario, decided by the real engine and
success_rate strategy with its counters in the suite's Redis, pays against a fixed priority order."""
from __future__ import annotations

from bench.routing_sim import Scenario, compare, rules_for

SHORT = Scenario(minutes=20, per_minute=60, drop_at=6, drop_minutes=8, seed=7)


def test_success_rate_moves_off_a_failing_channel_and_beats_priority(clean):
    results = compare(SHORT)
    rate, priority, oracle = results["success_rate"], results["priority"], results["oracle"]
    # 8 of 20 minutes with A at 60 % against B at 90 %: priority keeps A and loses about 12 points
    assert priority.shift_away_s is None and min(priority.share_a) == 1.0
    assert rate.success_percent > priority.success_percent + 6, (rate.success_percent, priority.success_percent)
    # and it recovers most of what priority loses against the oracle
    assert oracle.success_percent - rate.success_percent < (oracle.success_percent - priority.success_percent) / 2
    assert rate.shift_away_s is not None and rate.shift_away_s <= 150, rate.shift_away_s
    assert max(rate.share_a[SHORT.drop_at + 2:SHORT.recover_at]) <= 0.2, rate.share_a  # off A while it fails
    assert rate.explored > 0 and min(rate.share_a[SHORT.recover_at + 4:]) >= 0.8, rate.share_a  # and back


def test_the_compared_rule_files_load_as_the_product_loads_them():
    from rules import format as rules_format

    split = rules_format.load(rules_for("split"))
    assert split.defaults.split == (("sim_a", 50), ("sim_b", 50))
    tuned = rules_format.load(rules_for("success_rate", {"min_samples": 3})).defaults.strategy
    assert (tuned.name, tuned.window_minutes, tuned.min_samples, tuned.exploration_percent) == \
        ("success_rate", 5, 3, 10)
