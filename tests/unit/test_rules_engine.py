"""The durable-rules wrapper: threads, memory, reloads, and the subprocess compile check."""
from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest

from rules.compiler import plan
from rules.decide import decide, facts_for
from rules.engine import CompiledRules, EngineError, RulesSlot, check_compiles_in_subprocess
from rules.format import load

RULES = load({
    "rules": [
        {"id": f"r{i}", "priority": i % 7,
         "when": {"all": [{"fact": "currency", "eq": ["USD", "EUR", "JPY"][i % 3]},
                          {"fact": "amount", "gte": (i * 37) % 5000},
                          {"any": [{"fact": "customer.country", "in": ["FR", "DE"]},
                                   {"fact": "metadata.tier", "ne": "gold"}]}]},
         "then": {"route": ["acq_alpha", "acq_beta"]} if i % 2 else {"split": {"acq_alpha": 60, "acq_beta": 40}}}
        for i in range(60)
    ],
    "defaults": {"route": ["sandbox"], "fee": {"percent": "3.0"}},
})


def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # pragma: no cover
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def requests(n: int, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    return [facts_for("payment", rnd.randrange(0, 6000), rnd.choice(["USD", "EUR", "JPY", "GBP"]), {"type": "card"},
                      {"id": f"c{rnd.randrange(50)}", "country": rnd.choice(["FR", "DE", "US"])}, "m1", None,
                      {"tier": rnd.choice(["gold", "silver"])} if rnd.random() < 0.7 else {}) for _ in range(n)]


@pytest.mark.slow
def test_eight_threads_agree_with_single_thread():
    engine = CompiledRules(RULES, version=1)
    reqs = requests(2_000)
    expected = [decide(f, RULES, engine, split_key=str(i)).to_dict() for i, f in enumerate(reqs)]
    errors: list[str] = []

    def worker(offset: int) -> None:
        for rep in range(5):  # 8 threads x 10,000 decisions
            for i in range(len(reqs)):
                j = (i + offset * 251 + rep) % len(reqs)
                if decide(reqs[j], RULES, engine, split_key=str(j)).to_dict() != expected[j]:
                    errors.append(f"thread {offset} request {j}")
                    return

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()
    assert errors == [] and engine.fallbacks == 0


@pytest.mark.slow
def test_rss_flat_over_200000_decisions():
    engine = CompiledRules(RULES, version=1)
    reqs = requests(1_000, seed=2)
    for f in reqs * 5:
        decide(f, RULES, engine, split_key="k")
    before = rss_bytes()
    for _ in range(200):
        for f in reqs:
            decide(f, RULES, engine, split_key="k")
    grown = rss_bytes() - before
    engine.close()
    assert grown < 4 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB"


@pytest.mark.slow
def test_500_compile_swap_cycles_keep_memory_flat():
    slot = RulesSlot(CompiledRules(RULES, version=0))
    fact = {"amount": 100, "currency": "USD", "customer.country": "FR"}
    for v in range(1, 51):
        slot.swap(CompiledRules(RULES, version=v))
    before = rss_bytes()
    for v in range(51, 551):
        old = slot.current
        slot.swap(CompiledRules(RULES, version=v))
        assert old._handle is None and slot.current.match(fact)
    grown = rss_bytes() - before
    slot.swap(None)
    assert grown < 8 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB over 500 reloads"


def test_names_are_unique_per_version():
    a, b = CompiledRules(RULES, version=3), CompiledRules(RULES, version=3)
    assert a.name != b.name and "v3" in a.name
    a.close()
    b.close()


def test_subprocess_check_accepts_a_good_rule_set():
    check_compiles_in_subprocess(plan(RULES).to_json(), timeout=30)


def _fanout_json(n: int) -> str:
    rules = {"prime": {"all": [{"m": {"_p": 1}}]}}
    rules.update({f"t{i}": {"all": [{"m": {"$and": [{"$gt": {"p0": i}}]}}]} for i in range(n)})
    return json.dumps(rules)


def _identical_json(n: int) -> str:
    return json.dumps({f"t{i}": {"all": [{"m": {"$and": [{"p0": "USD"}]}}]} for i in range(n)})


@pytest.mark.parametrize("what", ["hang", "crash", "refusal"])
def test_subprocess_check_refuses_engine_killers_while_parent_answers(what, monkeypatch):
    import rules.engine

    if what == "crash":  # the engine aborting the process (as 512 children of one node can): simulate it
        monkeypatch.setattr(rules.engine, "_CHILD", "import os; os.abort()")
    candidate = _identical_json(300) if what == "refusal" else _fanout_json(520)
    engine = CompiledRules(RULES, version=1)
    reqs = requests(200, seed=3)
    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            check_compiles_in_subprocess(candidate, timeout=3)
            outcome.append(None)
        except EngineError as exc:
            outcome.append(exc)

    t = threading.Thread(target=check)
    t.start()
    answered = 0
    started = time.monotonic()
    while t.is_alive() and time.monotonic() - started < 60:
        for f in reqs:
            decide(f, RULES, engine, split_key="x")
            answered += 1
    t.join()
    engine.close()
    assert outcome and isinstance(outcome[0], EngineError), what
    assert answered > 100


def test_engine_refusal_is_an_engine_error():
    from rules.compiler import Plan

    rules = {f"t{i}": {"all": [{"m": {"$and": [{"p0": "USD"}]}}]} for i in range(300)}
    bad = Plan(RULES, {}, rules, {}, {})
    with pytest.raises(EngineError):
        CompiledRules(RULES, compiled=bad)


def test_rule_set_beyond_limits_is_an_engine_error_not_a_hang():
    from rules.model import Atom, Rule, RuleSet, Then

    rules = tuple(Rule(f"r{i}", 0, Atom("amount", "eq", i), Then(route=("s",)), i) for i in range(600))
    with pytest.raises(EngineError, match="limits"):
        CompiledRules(RuleSet(rules))


def test_stale_fact_in_the_session_is_replaced():
    import durable_rules_engine

    rules = load({"rules": [{"id": "usd", "when": {"fact": "currency", "eq": "USD"}, "then": {"route": ["s"]}}]})
    engine = CompiledRules(rules)
    stale = '{"id":"q","sid":"0","_r":1,"p0":"EUR"}'
    durable_rules_engine.assert_fact(engine._handle, stale)  # as if a failed decision left it behind
    assert engine.match({"currency": "USD"}) == ("usd",)
    assert engine.match({"currency": "EUR"}) == ()
    engine.close()


_PRIMING_FAILS = """
import dataclasses
from rules.compiler import plan
from rules.engine import CompiledRules, EngineError
from rules.format import load

rules = load({"rules": [{"id": "usd", "when": {"fact": "currency", "eq": "USD"}, "then": {"route": ["s"]}}]})
compiled = plan(rules)
never = dataclasses.replace(compiled, definition={**compiled.definition, "prime": {"all": [{"m": {"_p": 2}}]}})
for _ in range(20):
    try:
        CompiledRules(rules, compiled=never)
    except EngineError as exc:
        assert "priming" in str(exc), exc
    else:
        raise SystemExit("no EngineError")
engine = CompiledRules(rules)  # the engine still works after the refusals
assert engine.match({"currency": "USD"}) == ("usd",) and engine.fallbacks == 0
engine.close()
print("ok")
"""


def test_a_priming_rule_that_did_not_fire_is_refused_without_crashing():
    """The real engine, given a ruleset whose priming rule cannot match: its session never fired an
    action, and delete_state on such a session crashes the process (in a child here)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _PRIMING_FAILS], cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


def test_fallbacks_are_counted_for_the_process_and_logged(caplog):
    from rules.engine import fallback_count

    rules = load({"rules": [{"id": f"r{i}", "when": {"fact": "amount", "gt": i}, "then": {"route": ["s"]}}
                            for i in range(100)]})
    engine = CompiledRules(rules, version=7)
    before = fallback_count()
    with caplog.at_level("INFO", logger="payrouter.rules"):
        assert engine.match({"amount": 10}) == tuple(f"r{i}" for i in range(10))  # the engine answers
        assert len(engine.match({"amount": 500})) == 100  # more than 64 tests match at once: the reference
        engine.close()
        engine.match({"amount": 10})  # a closed handle: the reference again
    assert fallback_count() - before == engine.fallbacks == 2
    warnings = [r for r in caplog.records if r.name == "payrouter.rules" and r.levelname == "WARNING"]
    assert len(warnings) == 2 and engine.name in warnings[0].getMessage() and "version 7" in warnings[0].getMessage()
    assert "303" in warnings[0].getMessage() or "failed" in warnings[0].getMessage()
    assert "closed" in warnings[1].getMessage()


def test_swaps_are_logged(caplog):
    slot = RulesSlot()
    first, second = CompiledRules(RULES, version=1), CompiledRules(RULES, version=2)
    with caplog.at_level("INFO", logger="payrouter.rules"):
        slot.swap(first)
        slot.swap(second)
        slot.swap(second)  # the same matcher again: nothing happens
        slot.swap(None)
    swaps = [r.getMessage() for r in caplog.records if r.name == "payrouter.rules"]
    assert swaps == [f"rules swapped: {first.name} (version 1) in place of nothing",
                     f"rules swapped: {second.name} (version 2) in place of {first.name} (version 1)",
                     f"rules swapped: nothing in place of {second.name} (version 2)"]
    assert first._handle is None and second._handle is None
