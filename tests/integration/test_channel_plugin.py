"""A third-party adapter, installed as its own package (examples/channel-echo, which ``make setup-test``
installs), is routed to by configuration alone: a channels file entry naming its entry point and a
rule naming the instance. No file of the router knows it. Through the public API, with Echo Pay's
fake over HTTP: a payment, a decline, a pending payment settled by Echo Pay's signed callback to the
router, a refund, and a clean reconciliation against Echo Pay's settlement."""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os

import pytest
import yaml
from click.testing import CliRunner

from app.adapters import channels_runtime
from app.entrypoints.cli import main
from app.services import rules_store
from channels.registry import ENTRY_POINT_GROUP
from tests import builders
from tests.support import wait_until

SECRET = "echo-router-secret"
TO_ECHO = """
rules:
  - id: usd-cards-to-echo
    priority: 100
    when: {all: [{fact: currency, eq: USD}, {fact: payment_method.type, eq: card}]}
    then: {route: [echo]}
defaults: {route: [sandbox], fee: {percent: "1.0", fixed: 0}}
"""


@pytest.fixture
def echo(stack):
    """Echo Pay's fake, an ``adapter: echo`` instance in the router's channels file, a rule routing to it."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name="echo")
    assert found, "payrouter-channel-echo is not installed: pip install ./examples/channel-echo (make setup-test does)"
    from payrouter_channel_echo.psp import EchoPSP

    with EchoPSP(SECRET, notify_delay_s=0.2) as psp:
        path = stack.config.channels_file
        data = yaml.safe_load(path.read_text())
        data["channels"].append({"id": "echo", "adapter": "echo", "methods": ["card"], "currencies": ["USD"],
                                 "operations": ["payment", "refund"], "cost": {"percent": "1.0", "fixed": 0},
                                 "timeout_ms": 1000, "config": {"base_url": psp.url, "secret_env": "ECHO_SECRET"}})
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        channels_runtime.reset()
        stack.serve(stack.config.with_(channel_env={**os.environ, "ECHO_SECRET": SECRET}))
        builders.store_channels()  # as `payrouter channels import` would: every process runs echo within 2 s
        api = builders.api(stack.client)
        version = rules_store.publish_and_announce(TO_ECHO, "test", "route to the echo plugin")
        wait_until(lambda: api.post("/v1/routing/simulate", builders.payment_body(100)).get_json()["ruleset_version"]
                   == version, what="the rule set routing to echo in use")
        yield api
        channels_runtime.reset()


def attempts(payment: dict) -> list[tuple]:
    return [(a["channel"], a["status"], a.get("error_code")) for a in payment["attempts"]]


def test_an_installed_adapter_is_routed_to_by_config(stack, echo):
    assert type(channels_runtime.channel("echo")).__module__ == "payrouter_channel_echo.adapter"

    paid = echo.post("/v1/payments", builders.payment_body(1000)).get_json()
    assert paid["status"] == "succeeded" and paid["routing"]["channel"] == "echo", paid
    assert attempts(paid) == [("echo", "succeeded", None)] and paid["fee"] == 10

    declined = echo.post("/v1/payments", builders.payment_body(1001)).get_json()
    assert declined["status"] == "failed" and declined["failure_code"] == "do_not_honor", declined
    assert attempts(declined) == [("echo", "failed", "do_not_honor")]

    pending = echo.post("/v1/payments", builders.payment_body(1002)).get_json()
    assert pending["status"] == "processing", pending
    settled = stack.settle(echo, f"/v1/payments/{pending['id']}")  # Echo Pay's signed callback, then the worker
    assert settled["status"] == "succeeded", settled

    refund = echo.post("/v1/refunds", {"payment": paid["id"], "amount": 400, "reference": builders.unique("re")})
    assert refund.status_code == 201 and refund.get_json()["status"] == "succeeded", refund.get_json()

    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    result = CliRunner().invoke(main, ["reconcile", "--channel", "echo", "--date", today, "--json"])
    assert result.exit_code == 0, result.output  # every line of Echo Pay's settlement matches ours
    assert json.loads(result.output)["matched"] == 4  # three payments (one declined) and the refund


def test_a_fault_at_the_plugins_psp_fails_over_and_silence_stays_processing(stack, echo):
    refused = echo.post("/v1/payments", builders.payment_body(1005)).get_json()  # Echo Pay answers 503
    assert attempts(refused) == [("echo", "failed", "channel_error")] and refused["status"] == "failed", refused

    unknown = echo.post("/v1/payments", builders.payment_body(1003)).get_json()  # answered after the timeout
    assert unknown["status"] == "processing" and attempts(unknown)[0][:2] == ("echo", "unknown"), unknown
    settled = stack.settle(echo, f"/v1/payments/{unknown['id']}", timeout=15)  # a status query settles it
    assert settled["status"] == "succeeded", settled
