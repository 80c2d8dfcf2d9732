"""Counters the code moves in memory: an engine fallback counts once per decision it answered."""
from app.adapters import metrics
from rules.engine import CompiledRules
from rules.format import load


def test_each_engine_fallback_counts_once():
    rules = [{"id": f"r{i}", "when": {"fact": "amount", "gt": i}, "then": {"route": ["s"]}} for i in range(100)]
    engine = CompiledRules(load({"rules": rules}))
    before = metrics.ENGINE_FALLBACKS._value.get()
    engine.match({"amount": 500, "currency": "USD"})  # more than 64 tests match at once: the reference answers
    engine.match({"amount": 10, "currency": "USD"})  # the engine answers
    assert engine.fallbacks == 1 and metrics.ENGINE_FALLBACKS._value.get() - before == 1
    engine.close()
