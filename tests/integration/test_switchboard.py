"""Switches in words (contract §5): the outcome-named CLI, the old ``switch set`` as an alias,
``switch list`` and ``switch history`` in words, a required reason, and routing obeying them."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import AuditLog
from app.entrypoints.cli import main
from app.services import switchboard, switches
from tests import builders

WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_each_outcome_named_command_speaks_in_words_and_is_obeyed(clean):
    said = cli("channel", "disable", "acq_alpha", "--reason", "acquirer outage", "--actor", "alice").output
    assert re.fullmatch(rf"Channel acq_alpha: disabled since {WHEN}, by cli:alice, because acquirer outage\n", said)
    assert switches.is_on("channel:acq_alpha")
    paused = cli("operation", "pause", "withdrawal", "--reason", "bank holiday").output
    assert paused.startswith("Operation withdrawal: paused since")
    assert switches.is_on("operation:withdrawal")
    assert "Webhooks: paused since" in cli("webhooks", "pause", "--reason", "receiver down").output
    assert switches.is_on("webhooks")
    assert "Read-only mode: on since" in cli("read-only", "on", "--reason", "migration").output
    assert switches.is_on("read_only")
    assert "Read-only mode: off since" in cli("read-only", "off", "--reason", "migration done").output
    assert "Webhooks: running since" in cli("webhooks", "resume", "--reason", "receiver back").output
    assert "Operation withdrawal: running since" in cli("operation", "resume", "withdrawal", "--reason", "open").output
    assert not any(switches.is_on(n) for n in ("read_only", "webhooks", "operation:withdrawal"))

    listed = cli("switch", "list").output.splitlines()
    assert listed[:3] == ["Channel sandbox: enabled",
                          next(line for line in listed if line.startswith("Channel acq_alpha: disabled since")),
                          "Channel acq_beta: enabled"]
    assert "Operation payment: running" in listed and "Operation transfer: running" in listed
    assert any(re.fullmatch(rf"Read-only mode: off since {WHEN}, by cli:\S+, because migration done", line)
               for line in listed)

    history = cli("switch", "history").output.splitlines()
    assert len(history) == 7
    assert re.fullmatch(rf"{WHEN}: cli:\S+ resumed operation withdrawal, because open", history[0])
    assert re.fullmatch(rf"{WHEN}: cli:alice disabled channel acq_alpha, because acquirer outage", history[-1])
    assert "turned on read-only mode, because migration" in history[3]
    only = cli("switch", "history", "channel:acq_alpha").output.splitlines()
    assert len(only) == 1 and "disabled channel acq_alpha" in only[0]

    with unit_of_work() as session:
        rows = list(session.scalars(select(AuditLog).order_by(AuditLog.id)))
    assert [(r.action, r.target) for r in rows][:2] == [("switch.set", "channel:acq_alpha"),
                                                        ("switch.set", "operation:withdrawal")]
    assert rows[0].actor == "cli:alice" and rows[0].reason == "acquirer outage"
    assert rows[0].before is None and rows[0].after["on"] is True


def test_the_old_switch_set_is_an_alias(clean):
    out = cli("switch", "set", "channel:acq_beta", "on", "--reason", "old habits", "--actor", "bob").output
    assert '"on": true' in out and switches.is_on("channel:acq_beta")
    entry = {e["name"]: e for e in switchboard.board()}["channel:acq_beta"]
    assert entry["state"] == "disabled" and entry["action"] == {"label": "Enable", "on": False}
    assert entry["words"].endswith("by cli:bob, because old habits")
    cli("switch", "set", "channel:acq_beta", "off", "--reason", "back")
    assert not switches.is_on("channel:acq_beta")
    history = switchboard.history("channel:acq_beta")
    assert [h["words"].split(": ", 1)[1] for h in history] == [
        f"{history[0]['actor']} enabled channel acq_beta, because back",
        "cli:bob disabled channel acq_beta, because old habits"]
    cli("channel", "enable", "acq_beta", "--reason", "again")
    assert "kept channel acq_beta enabled" in switchboard.history("channel:acq_beta")[0]["words"]


def test_a_reason_is_required_and_unknown_things_are_refused(clean):
    assert cli("channel", "disable", "acq_alpha", ok=False).exit_code == 2  # --reason missing
    blank = cli("channel", "disable", "acq_alpha", "--reason", "  ", ok=False)
    assert blank.exit_code == 1 and "a reason is required" in blank.output
    unknown = cli("channel", "disable", "acq_gamma", "--reason", "x", ok=False)
    assert unknown.exit_code == 1 and "no such channel 'acq_gamma'" in unknown.output
    assert cli("operation", "pause", "cashback", "--reason", "x", ok=False).exit_code == 2
    assert cli("switch", "history", "nope", ok=False).exit_code == 1
    assert switches.all() == []


def test_json_output_and_board_entries(clean):
    import json

    entry = json.loads(cli("channel", "disable", "sandbox", "--reason", "drill", "--json").output)
    assert entry["name"] == "channel:sandbox" and entry["on"] is True and entry["state"] == "disabled"
    assert entry["by"].startswith("cli:") and entry["reason"] == "drill" and entry["since"].endswith("Z")
    board = json.loads(cli("switch", "list", "--json").output)
    assert [e["name"] for e in board] == ["channel:sandbox", "channel:acq_alpha", "channel:acq_beta",
                                          "operation:payment", "operation:topup", "operation:withdrawal",
                                          "operation:refund", "operation:transfer", "webhooks", "read_only"]
    labels = {e["name"]: e["action"]["label"] for e in board}
    assert labels["channel:sandbox"] == "Enable" and labels["channel:acq_alpha"] == "Disable"
    assert labels["webhooks"] == "Pause" and labels["read_only"] == "Turn on"


@pytest.mark.parametrize("command", [("channel", "disable", "acq_alpha"), ("switch", "set", "channel:acq_alpha", "on")])
def test_a_disabled_channel_is_dropped_as_switched_off(client, command):
    api = builders.api(client)
    before = api.post("/v1/routing/simulate", builders.payment_body(100_000)).get_json()
    assert before["channel"] == "acq_alpha" and before["dropped"] == []
    cli(*command, "--reason", "drill")
    after = api.post("/v1/routing/simulate", builders.payment_body(100_000)).get_json()
    assert after["dropped"] == [{"channel": "acq_alpha", "reason": "switched_off"}]
    assert after["channel"] == "acq_beta"
    cli("channel", "enable", "acq_alpha", "--reason", "drill over")
    assert api.post("/v1/routing/simulate", builders.payment_body(100_000)).get_json()["channel"] == "acq_alpha"
