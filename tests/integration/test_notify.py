"""Change notices over the real Redis pub/sub (app.adapters.notify): with polling made too slow to
matter, a switch toggled or a rule set published in another process is obeyed here within
2 s only because of the notice; with Redis unreachable the caches fall back to polling."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from app.adapters import notify
from app.services import rules_runtime as runtime
from app.services import switches
from tests.live import process_env


@pytest.fixture
def listening(clean, monkeypatch):
    monkeypatch.setattr(switches._cache, "check_interval", 600.0)
    monkeypatch.setattr(switches._cache, "reload_interval", 600.0)
    monkeypatch.setattr(runtime, "CHECK_INTERVAL", 600.0)
    monkeypatch.setattr(runtime, "RELOAD_INTERVAL", 600.0)
    switches.reset_cache()
    runtime.reset()
    assert notify.wait_until_healthy(10), "the listener did not subscribe"
    yield clean
    switches.reset_cache()
    runtime.reset()


def _cli(config, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "app", *args], env=process_env(config), capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()


def _within(seconds: float, predicate) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < seconds, "not seen in time"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_switch_toggled_elsewhere_is_obeyed_on_the_notice(listening):
    assert switches.is_on("channel:acq_alpha") is False  # cached here; polling would wait 600 s
    _cli(listening, "switch", "set", "channel:acq_alpha", "on", "--reason", "drill", "--actor", "ci")
    _within(2.0, lambda: switches.is_on("channel:acq_alpha"))
    _cli(listening, "switch", "set", "channel:acq_alpha", "off", "--reason", "drill", "--actor", "ci")
    _within(2.0, lambda: not switches.is_on("channel:acq_alpha"))


def test_a_rule_set_published_elsewhere_is_used_on_the_notice(listening, tmp_path):
    from app.services.rules_store import DEFAULT_RULES, seed_default_rules

    seed_default_rules()
    runtime.current()
    before = runtime.version_in_use()
    source = tmp_path / "rules.yaml"
    source.write_text(DEFAULT_RULES.read_text() + "\n# a new version\n")
    _cli(listening, "rules", "publish", str(source), "--author", "ci", "--comment", "notice test")
    _within(2.0, lambda: runtime.current() is not None and runtime.version_in_use() != before)


def test_without_a_subscription_the_caches_poll(clean, monkeypatch):
    from app.config import scoped
    from tests.live import free_port

    with scoped(clean.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0")):  # nothing listens there
        assert notify.healthy() is False
        time.sleep(0.3)
        assert notify.healthy() is False  # the listener keeps retrying, and says it is not subscribed
    assert notify.wait_until_healthy(10)  # back on the run's Redis: subscribed again
