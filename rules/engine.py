"""The only module that touches durable-rules (its C module ``durable_rules_engine``).

``CompiledRules`` owns one ruleset handle and ONE reused session (sid "0"). A decision is,
under a process-wide lock: assert the fact → drain every triggered action → retract it.
No ``durable.lang``, no ``Host`` threads. If the engine errors on a fact (e.g. error 303:
more than 64 tests matching one fact at once) the session is drained and the decision is
answered by the reference evaluator instead, so answers stay correct: ``fallbacks`` counts them
per handle, ``fallback_count()`` for the process, and each one is logged (logger ``payrouter.rules``).

Rulesets are immutable in the engine: a new version is a new ``CompiledRules`` under a
unique name; ``RulesSlot.swap`` installs it and deletes the old handle.
"""
from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from json.encoder import encode_basestring as _encode_str
from typing import Any

import durable_rules_engine as _dre

from rules import patterns
from rules.compiler import Plan, TooComplex, plan
from rules.model import RuleSet
from rules.reference import ReferenceRules

ENGINE_LOCK = threading.RLock()
# Called (no argument) on every decision the reference evaluator answered instead of the engine:
# app.adapters.metrics counts them for /metrics, without this module knowing of it.
FALLBACK_LISTENERS: list = []
log = logging.getLogger("payrouter.rules")
_fallback_total = 0  # written under ENGINE_LOCK; read through fallback_count()
_names = itertools.count(1)
_SID = "0"


class EngineError(RuntimeError):
    """durable-rules refused a rule set."""


def fallback_count() -> int:
    """Decisions the reference evaluator answered instead of the engine, in this process so far."""
    return _fallback_total


def _post_ok(post: tuple, facts: Mapping[str, Any]) -> bool:
    for op, path, pattern in post:
        value = facts.get(path)
        hit = isinstance(value, str) and patterns.search(pattern, value)
        if hit != (op == "mt"):
            return False
    return True


class CompiledRules:
    """A RuleSet compiled into one durable-rules handle; ``match`` is thread-safe."""

    kind = "engine"

    def __init__(self, ruleset: RuleSet, version: int | None = None, compiled: Plan | None = None):
        self.ruleset = ruleset
        self.version = version
        try:
            self.plan = compiled or plan(ruleset)
        except TooComplex as exc:
            raise EngineError(f"rule set exceeds the engine's limits: {exc}") from exc
        self.name = f"payrouter_v{version if version is not None else 'x'}_{os.getpid()}_{next(_names)}"
        self.fallbacks = 0
        self._reference = ReferenceRules(ruleset, version)
        order = ruleset.order()
        self._rank = {index: rank for rank, index in enumerate(order)}
        self._ids = tuple(rule.id for rule in ruleset.rules)
        # only the paths the engine tests: a value only ``matches`` reads (say a 10 KB e-mail) is
        # not parsed by durable-rules on every decision (its cost grows with the value's length)
        tested = {lit[1] for chain in self.plan.chains.values() for lit in chain}
        self._props = tuple((path, f',"{name}":') for path, name in self.plan.props.items() if path in tested)
        self._targets = self.plan.targets
        with ENGINE_LOCK:
            try:
                self._handle = _dre.create_ruleset(self.name, self.plan.to_json())
            except _dre.error as exc:
                raise EngineError(f"durable-rules refused the rule set: {exc}") from exc
            fired = self._run('{"id":"prime","sid":"0","_p":1}')
            if "prime" not in fired:
                # No action ever fired on the session, so delete_state would free uninitialised
                # memory (a crash): delete the ruleset only.
                handle, self._handle = self._handle, None
                try:
                    _dre.delete_ruleset(handle)
                except _dre.error:  # pragma: no cover
                    pass
                raise EngineError("priming rule did not fire")

    def _run(self, fact_json: str) -> list[str]:
        """assert → drain → retract on the reused session; caller holds ENGINE_LOCK."""
        handle = self._handle
        fired: list[str] = []
        try:
            code, state = _dre.assert_fact(handle, fact_json)
            if code == 2:  # "observed": a stale copy of the fact survived an earlier failure; replace it
                _dre.retract_fact(handle, fact_json)
                code, state = _dre.assert_fact(handle, fact_json)
            if code not in (0, 1):  # 1 = no rule matched the fact
                raise _dre.error(f"assert_fact returned {code}")
            result = _dre.start_action_for_state(handle, state)
            message = result[1] if result else None
            while message:
                # the message is '{"<rule name>":{...}}'; our names never contain quotes
                fired.append(message[2:message.index('"', 2)])
                message = _dre.complete_and_start_action(handle, state)
        except _dre.error:
            self._drain()
            raise
        finally:
            try:
                _dre.retract_fact(handle, fact_json)
            except _dre.error:
                pass
        return fired

    def _drain(self) -> None:
        """Complete whatever a failed assert left pending so the next decision starts clean."""
        for _ in range(100_000):
            result = _dre.start_action(self._handle)
            if not result:
                return
            message = result[1]
            while message:
                message = _dre.complete_and_start_action(self._handle, result[2])

    def _fact(self, facts: Mapping[str, Any]) -> str:
        parts = ['{"id":"q","sid":"0","_r":1']
        for path, key in self._props:  # key: ',"p<i>":' (no escaping needed); values are str or int
            value = facts.get(path)
            kind = type(value)
            if kind is str:
                parts.append(key + _encode_str(value))
            elif kind is int:
                parts.append(key + str(value))
        parts.append("}")
        return "".join(parts)

    def _ids_of(self, fired: list[str], facts: Mapping[str, Any]) -> tuple[str, ...]:
        hits = set()
        targets = self._targets
        for name in fired:
            for index, post in targets.get(name, ()):
                if index not in hits and (not post or _post_ok(post, facts)):
                    hits.add(index)
        rank = self._rank
        ids = self._ids
        return tuple(ids[i] for i in sorted(hits, key=rank.__getitem__))

    def match(self, facts: Mapping[str, Any]) -> tuple[str, ...]:
        """Rule ids matching flat typed ``facts``, by priority desc then file order."""
        global _fallback_total
        text = self._fact(facts)
        with ENGINE_LOCK:
            if self._handle is None:
                fired, why = None, "the engine handle is closed"
            else:
                try:
                    fired = self._run(text)
                except _dre.error as exc:
                    fired, why = None, f"the engine failed on the fact: {exc}"
            if fired is None:
                self.fallbacks += 1
                _fallback_total += 1
        if fired is None:
            log.warning("rules %s (version %s): the reference evaluator answered: %s", self.name, self.version, why)
            for listener in FALLBACK_LISTENERS:
                listener()
            return self._reference.match(facts)
        return self._ids_of(fired, facts)

    def try_match(self, facts: Mapping[str, Any]) -> tuple[str, ...] | None:
        """``match`` without the reference evaluator's answer: None when the handle is closed, ``EngineError``
        when the engine fails on the fact (e.g. error 303); neither is counted as a fallback. For a
        matcher the caller can replace by other matches (a pair: ``rules.decide.Paired``)."""
        text = self._fact(facts)
        with ENGINE_LOCK:
            if self._handle is None:
                return None
            try:
                fired = self._run(text)
            except _dre.error as exc:
                raise EngineError(f"the engine failed on the fact: {exc}") from None
        return self._ids_of(fired, facts)

    def close(self) -> None:
        """Delete the engine handle (idempotent); later ``match`` calls use the reference evaluator."""
        with ENGINE_LOCK:
            if getattr(self, "_handle", None) is not None:
                handle, self._handle = self._handle, None
                try:  # the session fired (priming), so delete_state is safe; without it every reload leaks
                    _dre.delete_state(handle, _SID)
                except _dre.error:  # pragma: no cover
                    pass
                try:
                    _dre.delete_ruleset(handle)
                except _dre.error:  # pragma: no cover
                    pass


def _describe(matcher: Any) -> str:
    if matcher is None:
        return "nothing"
    return f"{getattr(matcher, 'name', type(matcher).__name__)} (version {getattr(matcher, 'version', None)})"


class RulesSlot:
    """Holds the live matcher of a process; ``swap`` installs a new one and frees the old one."""

    def __init__(self, current: Any = None):
        self._current = current
        self._lock = threading.Lock()

    @property
    def current(self) -> Any:
        return self._current

    def swap(self, new: Any) -> Any:
        with self._lock:
            old, self._current = self._current, new
        if old is not new:
            log.info("rules swapped: %s in place of %s", _describe(new), _describe(old))
        if old is not None and old is not new:
            old.close()
        return old


_CHILD = """
import json, sys
import durable_rules_engine as d
text = sys.stdin.read()
h = d.create_ruleset("payrouter_check", text)
for fact in ('{"id":"prime","sid":"0","_p":1}', '{"id":"q","sid":"0","_r":1}'):
    s = d.assert_fact(h, fact)[1]
    r = d.start_action_for_state(h, s)
    m = r[1] if r else None
    while m:
        m = d.complete_and_start_action(h, s)
    d.retract_fact(h, fact)
d.delete_ruleset(h)
print("ok")
"""


def check_compiles_in_subprocess(ruleset_json: str, timeout: float = 10) -> None:
    """Compile ``ruleset_json`` in a child process; ``EngineError`` if it fails, crashes or hangs."""
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD], input=ruleset_json, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"compiling the rule set did not finish within {timeout} s") from exc
    if done.returncode != 0 or done.stdout.strip() != "ok":
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise EngineError(f"the engine could not compile the rule set: {detail}")
