"""A merchant's own rule set beside the platform's (contract §3): every decline and limit of both
(the platform's declines first, the strictest limit winning), route/split/retry from the merchant's set
where it has one, the fee only from the platform's; and what validate refuses in a merchant's set."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from rules.decide import MerchantRules, Paired, decide, facts_for, paired, sources
from rules.engine import CompiledRules
from rules.facts import flatten
from rules.format import MERCHANT_FEE, check, load
from rules.reference import ReferenceRules

PLATFORM = load({
    "rules": [
        {"id": "deny-kp", "priority": 10, "when": {"fact": "customer.country", "eq": "KP"},
         "then": {"decline": "country_blocked"}},
        {"id": "usd-route", "priority": 100, "when": {"fact": "currency", "eq": "USD"},
         "then": {"route": ["acq_alpha", "acq_beta"], "fee": {"percent": "2.9", "fixed": 30},
                  "limits": {"max_amount": 500_000, "min_amount": 100, "daily_count": {"per": "customer", "max": 5}}}},
        {"id": "eur-split", "priority": 50, "when": {"fact": "currency", "eq": "EUR"},
         "then": {"split": {"acq_alpha": 70, "acq_beta": 30}}},
    ],
    "defaults": {"route": ["sandbox"], "fee": {"percent": "3.0", "fixed": 0}},
})
OWN = load({
    "rules": [
        {"id": "deny-gb", "priority": 5, "when": {"fact": "customer.country", "eq": "GB"},
         "then": {"decline": "merchant_blocked"}},
        {"id": "usd-beta", "priority": 100, "when": {"fact": "currency", "eq": "USD"},
         "then": {"route": ["acq_beta", "acq_alpha"], "retry": {"on": ["issuer_unavailable"]},
                  "limits": {"max_amount": 300_000, "daily_count": {"per": "customer", "max": 3}}}},
        {"id": "loose", "priority": 1, "when": {"fact": "amount", "gte": 1},
         "then": {"limits": {"max_amount": 900_000, "min_amount": 100, "daily_count": {"per": "merchant", "max": 50}}}},
    ],
})
NOW = datetime(2026, 3, 7, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["engine", "reference", "paired"])
def kind(request):
    return request.param


class Counting:
    """A matcher that counts its matches (how many engine matches a decision made)."""

    def __init__(self, matcher):
        self.matcher, self.version, self.calls = matcher, matcher.version, 0

    def match(self, facts):
        self.calls += 1
        return self.matcher.match(facts)


@pytest.fixture
def sets(kind):
    """(platform matcher, the merchant's rules, a pair of both compiled as one or None)."""
    made = []

    def matcher(ruleset, version):
        m = ReferenceRules(ruleset, version) if kind == "reference" else CompiledRules(ruleset, version)
        made.append(m)
        return m

    platform = matcher(PLATFORM, 7)
    own = MerchantRules("mer_1", OWN, matcher(OWN, 9), 9)
    pair = Paired(platform, own, matcher(paired(PLATFORM, own), 7)) if kind == "paired" else None
    yield platform, own, pair
    for m in made:
        m.close()


def facts(amount=1000, currency="USD", country="US", op="payment"):
    return facts_for(op, amount, currency, {"type": "card"}, {"id": "c1", "country": country}, "mer_1", None, {}, NOW)


def run(sets, **kw):
    platform, own, pair = sets
    return decide(facts(**kw), PLATFORM, platform, split_key="k", merchant=own, pair=pair)


def test_the_platforms_decline_wins_over_the_merchants_route(sets):
    d = run(sets, country="KP")
    assert (d.outcome, d.decline_code, d.declined_by) == ("decline", "country_blocked", "deny-kp")


def test_the_merchants_decline_applies_although_the_platform_routes(sets):
    d = run(sets, country="GB")
    assert (d.outcome, d.decline_code, d.declined_by) == ("decline", "merchant_blocked", "mer_1/deny-gb")
    assert "mer_1/deny-gb" in d.matched_rules and "usd-route" in d.matched_rules


def test_limits_of_both_sets_combine_and_the_strictest_wins(sets):
    d = run(sets, amount=400_000)  # under the platform's 500 000, over the merchant's 300 000
    assert (d.decline_code, d.declined_by) == ("limit_exceeded", "mer_1/usd-beta")
    assert d.limits["max_amount"] == {"max": 300_000, "rule": "mer_1/usd-beta"}
    # the merchant's looser 900 000 never loosens the platform's; a tie on min_amount keeps the platform's rule
    assert d.limits["min_amount"] == {"min": 100, "rule": "usd-route"}
    assert d.limits["daily_count"] == [{"per": "customer", "max": 3, "rule": "mer_1/usd-beta"},
                                       {"per": "merchant", "max": 50, "rule": "mer_1/loose"}]
    assert run(sets, amount=50).declined_by == "usd-route"  # the platform's minimum still applies


def test_route_and_retry_come_from_the_merchants_set_and_the_fee_from_the_platforms(sets):
    d = run(sets, amount=10_000)
    assert d.outcome == "route" and d.candidates == ("acq_beta", "acq_alpha") and d.channel == "acq_beta"
    assert d.fee == 320  # the platform's usd-route: 2.9 % of 10 000 + 30
    assert d.retry == {"on": ("issuer_unavailable",), "max": 1, "rule": "mer_1/usd-beta"}
    assert d.ruleset_version == 7 and d.to_dict()["merchant_ruleset_version"] == 9
    why = sources(PLATFORM, d.matched_rules, sets[1])
    assert (why["routing"], why["fee"]) == ("mer_1/usd-beta", "usd-route")


def test_without_a_merchant_route_the_platforms_applies(sets):
    d = run(sets, amount=10_000, currency="EUR")
    assert d.channel in ("acq_alpha", "acq_beta") and set(d.candidates) == {"acq_alpha", "acq_beta"}
    assert d.fee == 300 and d.retry is None  # the platform's defaults fee: 3 %
    assert d.matched_rules == ("eur-split", "mer_1/loose")


def test_a_merchants_defaults_route_before_the_platforms_rules(kind):
    own_set = load({"rules": [], "defaults": {"route": ["sandbox"]}})
    own_m = ReferenceRules(own_set, 3) if kind == "reference" else CompiledRules(own_set, 3)
    platform = ReferenceRules(PLATFORM, 7)
    try:
        d = decide(facts(), PLATFORM, platform, split_key="k", merchant=MerchantRules("mer_1", own_set, own_m, 3))
    finally:
        own_m.close()
    assert d.channel == "sandbox" and d.fee == 59  # fee: still the platform's usd-route


def test_a_fee_in_a_merchant_set_never_reaches_the_decision(kind):
    own_set = load({"rules": [{"id": "cheap", "when": {"fact": "amount", "gte": 1},
                               "then": {"fee": {"percent": "0", "fixed": 0}}}]})  # loaded as a platform file would be
    own_m = ReferenceRules(own_set, 4) if kind == "reference" else CompiledRules(own_set, 4)
    try:
        d = decide(facts(), PLATFORM, ReferenceRules(PLATFORM, 7), split_key="k",
                   merchant=MerchantRules("mer_1", own_set, own_m, 4))
    finally:
        own_m.close()
    assert d.fee == 59


def test_a_pair_is_one_match_and_only_for_the_sets_it_was_built_for():
    platform, mine = CompiledRules(PLATFORM, 7), CompiledRules(OWN, 9)
    both = CompiledRules(paired(PLATFORM, MerchantRules("mer_1", OWN, mine, 9)), 7)
    try:
        counted = [Counting(m) for m in (platform, mine, both)]
        own = MerchantRules("mer_1", OWN, counted[1], 9)
        pair = Paired(counted[0], own, counted[2])
        one = decide(facts(amount=10_000), PLATFORM, counted[0], split_key="k", merchant=own, pair=pair)
        assert [c.calls for c in counted] == [0, 0, 1]
        two = decide(facts(amount=10_000), PLATFORM, counted[0], split_key="k", merchant=own)
        assert one == two and [c.calls for c in counted] == [1, 1, 1]
        # built for another version of the merchant's set (or of the platform's): not used
        newer = MerchantRules("mer_1", OWN, counted[1], 10)
        decide(facts(), PLATFORM, counted[0], split_key="k", merchant=newer, pair=pair)
        decide(facts(), PLATFORM, Counting(platform), split_key="k", merchant=own, pair=pair)
        assert [c.calls for c in counted] == [2, 3, 1]
        # a pair that could not be compiled (matcher None): each set is matched on its own
        decide(facts(), PLATFORM, counted[0], split_key="k", merchant=own, pair=Paired(counted[0], own, None))
        assert [c.calls for c in counted] == [3, 4, 1]
    finally:
        for m in (platform, mine, both):
            m.close()


def test_one_match_of_the_pair_decides_as_two_on_generated_sets():
    """Both sets generated (bench/rules.py: 100 platform rules, a merchant's 20), 3,000 requests: the
    pair's one match gives the decision the two matches give, and the reference evaluator too."""
    from bench.rules import make_merchant_rules, make_requests, make_rules

    platform_set, own_set = load(make_rules(100)), load(make_merchant_rules(20))
    platform, mine = CompiledRules(platform_set, 1), CompiledRules(own_set, 2)
    own = MerchantRules("mer_1", own_set, mine, 2)
    pair = Paired(platform, own, CompiledRules(paired(platform_set, own), 1))
    reference = MerchantRules("mer_1", own_set, ReferenceRules(own_set, 2), 2)
    try:
        routed = 0
        for i, f in enumerate(make_requests(3000, seed=5)):
            one = decide(f, platform_set, platform, split_key=str(i), merchant=own, pair=pair)
            assert one == decide(f, platform_set, platform, split_key=str(i), merchant=own), flatten(f)
            assert one == decide(f, platform_set, ReferenceRules(platform_set, 1), split_key=str(i),
                                 merchant=reference)
            routed += one.outcome == "route" and any("/" in r for r in one.matched_rules)
        assert routed > 100 and pair.matcher.fallbacks == 0  # the merchant's rules did match, in the engine
    finally:
        for m in (platform, mine, pair.matcher):
            m.close()


def test_a_pair_closed_or_failing_on_a_fact_decides_as_two_matches_without_a_fallback(caplog):
    """A pair whose handle another thread closed (evicted, replaced) or on which the engine fails (error 303:
    40 + 40 rules matching one fact, when each set alone stays under 64) answers None: the decision is the
    two matches' one, no reference evaluator's answer counted as an engine failure; a failure is kept on
    the pair (every later decision: two matches) and logged once."""
    from rules.engine import fallback_count

    many = load({"rules": [{"id": f"p{i}", "priority": i, "when": {"fact": "amount", "gte": i + 1},
                            "then": {"limits": {"max_amount": 10 ** 9 - i}}} for i in range(40)],
                 "defaults": {"route": ["sandbox"], "fee": {"percent": "1", "fixed": 0}}})
    mine = load({"rules": [{"id": f"m{i}", "when": {"fact": "amount", "gte": 1000 + i},
                            "then": {"limits": {"max_amount": 10 ** 8 - i}}} for i in range(40)]})
    made = [CompiledRules(many, 1), CompiledRules(mine, 2), CompiledRules(PLATFORM, 7), CompiledRules(OWN, 9)]
    try:
        big_own = MerchantRules("mer_1", mine, made[1], 2)
        failing = Paired(made[0], big_own, CompiledRules(paired(many, big_own), 1))
        made.append(failing.matcher)
        own = MerchantRules("mer_1", OWN, made[3], 9)
        closed = Paired(made[2], own, CompiledRules(paired(PLATFORM, own), 7))
        closed.matcher.close()
        before = fallback_count()
        with caplog.at_level("WARNING", logger="payrouter.rules"):
            for _ in range(3):
                two = decide(facts(50_000), many, made[0], split_key="k", merchant=big_own)
                assert decide(facts(50_000), many, made[0], split_key="k", merchant=big_own, pair=failing) == two
            assert decide(facts(), PLATFORM, made[2], split_key="k", merchant=own, pair=closed) == \
                decide(facts(), PLATFORM, made[2], split_key="k", merchant=own)
        assert "303" in failing.failed and closed.failed is None
        assert fallback_count() == before and failing.matcher.fallbacks == closed.matcher.fallbacks == 0
        assert len(caplog.records) == 1 and "matched as one failed" in caplog.records[0].getMessage()
    finally:
        for m in made:
            m.close()


MERCHANT_FILE = """rules:
  - id: eur-to-old
    when: {fact: currency, eq: EUR}
    then:
      route: [acq_old, acq_alpha]
      fee: {percent: "1.0", fixed: 0}
  - id: split-some
    when: {fact: currency, eq: USD}
    then: {split: {acq_old: 50, nowhere: 50}}
defaults: {route: {strategy: cost, channels: [acq_old]}}
"""


def test_validate_refuses_in_a_merchant_set_a_fee_and_a_channel_it_cannot_use():
    known = {"acq_alpha", "acq_old"}
    _, problems = check(MERCHANT_FILE, known, {"acq_old": "it is disabled in the channels file"})
    found = {(p.path, p.message, p.line) for p in problems}
    unusable = "channel 'acq_old' cannot be used by this merchant: it is disabled in the channels file"
    assert ("/rules/0/then/route/0", unusable, 5) in found
    assert ("/rules/0/then/fee", MERCHANT_FEE, 6) in found
    assert ("/rules/1/then/split/acq_old", unusable, 9) in found
    assert ("/rules/1/then/split/nowhere", "unknown channel 'nowhere'", 9) in found
    assert ("/defaults/route/channels/0", unusable, 10) in found
    assert len(problems) == 5, problems
    # the same file as the platform's: a fee is its to set, and the disabled channel is only checked for merchants
    assert [p.path for p in check(MERCHANT_FILE, known)[1]] == ["/rules/1/then/split/nowhere"]
