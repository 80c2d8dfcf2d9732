"""Circuits opened and closed by hand (app.services.circuit_overrides, app.services.channels): obeyed by
another process within 2 s, routing drops the channel with ``circuit_open``, closing clears an
automatic open circuit too, audited; a healthy channel still costs no round trip; and the
"Channels" numbers (volume, success rate, p95 latency) from a known set of attempts."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import event, select

from app.adapters import cached, notify
from app.adapters.db import get_engine, unit_of_work
from app.adapters.models import Attempt, AuditLog, Operation, new_id, utcnow
from app.domain.errors import InvalidRequest
from app.entrypoints.cli import main
from app.services import breaker, channels, circuit_overrides
from tests import builders
from tests.live import process_env

CHANNEL = "acq_alpha"


def listening() -> None:
    deadline = time.monotonic() + 5
    while not notify.healthy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert notify.healthy()


def test_open_by_hand_drops_the_channel_until_closed_and_is_audited(client):
    api = builders.api(client)
    assert api.post("/v1/routing/simulate", builders.payment_body(100_000)).get_json()["channel"] == CHANNEL
    opened = channels.open_circuit(CHANNEL, "alice", "acquirer says down")
    assert opened["state"] == "open" and opened["manual"] and opened["opened_by"] == "alice"
    assert breaker.state(CHANNEL) == "open" and breaker.allow(CHANNEL) is False
    assert breaker.describe(CHANNEL)["reason"] == "acquirer says down"
    decision = api.post("/v1/routing/simulate", builders.payment_body(100_000)).get_json()
    assert decision["dropped"] == [{"channel": CHANNEL, "reason": "circuit_open"}]
    assert decision["channel"] == "acq_beta"

    closed = channels.close_circuit(CHANNEL, "bob", "acquirer back")
    assert closed["state"] == "closed" and breaker.state(CHANNEL) == "closed" and breaker.allow(CHANNEL)
    assert api.post("/v1/routing/simulate", builders.payment_body(100_000)).get_json()["dropped"] == []

    with unit_of_work() as session:
        rows = list(session.scalars(select(AuditLog).order_by(AuditLog.id)))
    assert [(r.actor, r.action, r.target, r.reason) for r in rows] == [
        ("alice", "circuit.open", "channel:acq_alpha", "acquirer says down"),
        ("bob", "circuit.close", "channel:acq_alpha", "acquirer back")]
    assert rows[0].before["state"] == "closed" and rows[0].after["state"] == "open" and rows[0].after["manual"]
    assert rows[1].before["manual"] is True and rows[1].after["state"] == "closed"


def test_close_clears_an_automatic_open_circuit_and_its_window(clean):
    now = time.time()
    for _ in range(breaker.MIN_CALLS):
        breaker.record(CHANNEL, ok=False, now=now)
    described = breaker.describe(CHANNEL)
    assert described["state"] == "open" and not described["manual"] and 0 < described["retry_in"] <= breaker.COOL_DOWN
    assert channels.circuit_words(described).startswith("open (automatic; a probe in")
    channels.close_circuit(CHANNEL, "carol", "false alarm")
    assert breaker.state(CHANNEL) == "closed" and breaker.allow(CHANNEL, now=now)
    breaker.record(CHANNEL, ok=False, now=now)  # the old faults are gone: one fault does not reopen it
    assert breaker.state(CHANNEL) == "closed"


def test_a_manual_open_outlasts_the_breaker_and_a_good_probe(clean):
    channels.open_circuit(CHANNEL, "alice", "maintenance window")
    now = time.time()
    for _ in range(breaker.MIN_CALLS):
        breaker.record(CHANNEL, ok=True, now=now)
    assert breaker.allow(CHANNEL, now=now) is False and breaker.state(CHANNEL) == "open"
    again = channels.open_circuit(CHANNEL, "bob", "still maintenance")  # a second open updates who and why
    assert again["opened_by"] == "bob" and breaker.describe(CHANNEL)["reason"] == "still maintenance"


def test_reason_and_channel_are_checked(clean):
    with pytest.raises(InvalidRequest, match="reason"):
        channels.open_circuit(CHANNEL, "alice", " ")
    with pytest.raises(InvalidRequest, match="no such channel"):
        channels.open_circuit("acq_gamma", "alice", "x")
    assert breaker.state(CHANNEL) == "closed"


def test_an_override_opened_in_another_process_is_obeyed_within_two_seconds(clean):
    listening()
    assert breaker.allow(CHANNEL) is True and breaker.state(CHANNEL) == "closed"  # trusted from here on
    env = process_env(clean)
    for verb, expected in (("open-circuit", False), ("close-circuit", True)):
        done = subprocess.run([sys.executable, "-m", "app", "channel", verb, CHANNEL, "--reason", "drill",
                               "--actor", "ci"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"Circuit of {CHANNEL}: ")
        changed = time.monotonic()
        while breaker.allow(CHANNEL) is not expected:
            assert time.monotonic() - changed < 2.0, f"{verb} not obeyed within 2 s"
            time.sleep(0.02)


def test_an_override_opened_here_is_obeyed_by_a_running_process_within_two_seconds(clean):
    watcher = subprocess.Popen(
        [sys.executable, "-c",
         "import time\nfrom app.adapters import notify\nfrom app.services import breaker\nnotify.wait_until_healthy()\n"
         f"assert breaker.allow({CHANNEL!r})\nprint('ready', flush=True)\n"
         f"while breaker.allow({CHANNEL!r}):\n    time.sleep(0.01)\nprint('open', flush=True)\n"
         f"while not breaker.allow({CHANNEL!r}):\n    time.sleep(0.01)\nprint('closed', flush=True)\n"],
        env=process_env(clean), stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout.readline().strip() == "ready"
        channels.open_circuit(CHANNEL, "alice", "drill")
        opened = time.monotonic()
        assert watcher.stdout.readline().strip() == "open"
        assert time.monotonic() - opened < 2.0
        channels.close_circuit(CHANNEL, "alice", "drill over")
        closed = time.monotonic()
        assert watcher.stdout.readline().strip() == "closed"
        assert time.monotonic() - closed < 2.0
    finally:
        watcher.kill()
        watcher.wait()


def test_a_healthy_channel_still_costs_no_round_trip(clean, monkeypatch):
    listening()
    assert breaker.allow(CHANNEL) is True and circuit_overrides.opened(CHANNEL) is None  # both read once
    statements = []

    def count(*_args):
        statements.append(1)

    def no_redis():
        raise AssertionError("Redis asked about a channel this process trusts")

    engine = get_engine(clean)
    event.listen(engine, "before_cursor_execute", count)
    monkeypatch.setattr(breaker, "get_redis", no_redis)
    monkeypatch.setattr(cached, "get_redis", no_redis)
    try:
        for _ in range(100):
            assert breaker.allow(CHANNEL) is True and breaker.state(CHANNEL) == "closed"
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []


def _attempts(merchant_id: str, rows: list[tuple[str, str, int | None, timedelta]]) -> None:
    now = utcnow()
    with unit_of_work() as session:
        for channel_id, status, duration, age in rows:
            op = Operation(id=new_id("pay"), merchant_id=merchant_id, kind="payment", status="succeeded",
                           amount=1000, currency="USD", reference=builders.unique("pay"), metadata_={}, routing={})
            session.add(op)
            session.flush()
            session.add(Attempt(id=new_id("att"), operation_id=op.id, seq=1, channel=channel_id, status=status,
                                duration_ms=duration, created_at=now - age, updated_at=now - age))


def test_stats_over_the_last_fifteen_minutes(clean):
    merchant_id, _ = builders.merchant()
    recent = timedelta(minutes=3)
    rows = [(CHANNEL, "succeeded", ms, recent) for ms in range(1, 16)]  # 15 successes, 1..15 ms
    rows += [(CHANNEL, "failed", 100, recent), (CHANNEL, "failed", 200, recent), (CHANNEL, "failed", 300, recent)]
    rows += [(CHANNEL, "unknown", 3000, recent), (CHANNEL, "processing", None, recent)]
    rows += [(CHANNEL, "failed", 9999, timedelta(minutes=16))]  # outside the window
    rows += [("acq_beta", "processing", None, recent), ("acq_beta", "processing", None, recent)]
    _attempts(merchant_id, rows)

    found = channels.stats()
    alpha = found[CHANNEL]
    assert alpha["volume"] == 20 and alpha["succeeded"] == 15 and alpha["answered"] == 19
    assert alpha["success_rate"] == round(15 / 19, 4)
    # 19 timed calls: 1..15, 100, 200, 300, 3000 ms; the nearest rank ceil(0.95 × 19) = 19th is 3000
    assert alpha["timed"] == 19 and alpha["p95_ms"] == 3000
    assert found["acq_beta"] == {"volume": 2, "succeeded": 0, "answered": 0, "success_rate": None,
                                 "p95_ms": None, "timed": 0}
    assert "sandbox" not in found

    _attempts(merchant_id, [(CHANNEL, "succeeded", 5, recent)])  # 20 timed: rank 19 of 20 is 300
    assert channels.stats()[CHANNEL]["p95_ms"] == 300
    board = {row["id"]: row for row in channels.board()}
    assert board[CHANNEL]["volume"] == 21 and board[CHANNEL]["p95_ms"] == 300 and board[CHANNEL]["mode"] == "test"
    assert board["sandbox"]["volume"] == 0 and board["sandbox"]["success_rate"] is None
    assert board[CHANNEL]["circuit"]["state"] == "closed" and board[CHANNEL]["enabled"]


def test_channels_list_and_a_real_call_records_its_answer_time(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(100_000)).get_json()
    assert payment["status"] == "succeeded" and payment["routing"]["channel"] == CHANNEL
    with unit_of_work() as session:
        attempt = session.scalars(select(Attempt).where(Attempt.operation_id == payment["id"])).one()
    assert attempt.duration_ms is not None and 0 <= attempt.duration_ms < 5000
    channels.open_circuit("acq_beta", "alice", "drill")
    listed = CliRunner().invoke(main, ["channels", "list"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split()[:7] == ["CHANNEL", "MODE", "ENABLED", "CIRCUIT", "CALLS", "SUCCESS", "P95"]
    alpha = next(line.split() for line in lines if line.startswith(CHANNEL))
    assert alpha[:6] == [CHANNEL, "test", "yes", "closed", "1", "100.0%"] and alpha[6] == str(attempt.duration_ms)
    assert next(line.split() for line in lines if line.startswith("acq_beta"))[3] == "open*"
    assert any("circuit open by hand since" in line and "because drill" in line for line in lines)
