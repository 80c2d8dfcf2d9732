"""One merchant's channel account is that merchant's, never the channel's (contract §4; the sandbox
over HTTP, the real circuit breaker of app/services/breaker.py):

- a call its account cannot make (credentials no request can carry, an adapter whose
  ``with_credentials`` raises) sends nothing: its attempt fails ``channel_account_unusable``, the
  next candidate is tried, and the channel's circuit is not charged with it;
- the PSP refusing the account's credentials (``CredentialsRefused``) is a decline of that
  account, ``channel_credentials_refused``: final, no failover, and nothing of the channel's (its
  circuit, its success rates: app.domain.channel_outcomes);
- however many of them one merchant makes, another merchant's payments still go to the channel.
"""
import time

import pytest

from app.adapters.redis_conn import get_redis
from app.services import breaker, channels, dashboard, success_rates
from channels.sandbox.adapter import SandboxChannel
from tests import builders
from tests.integration.test_channel_accounts import pay

TIMES = breaker.MIN_CALLS + 2  # enough faults to open a circuit, were they counted
LINE_BREAK = "sbxkey_x\r\nX-Injected: 1"
ROUTED_TWICE = 100_000  # 1000.00 USD by card routes to [acq_alpha, acq_beta]


def channels_tried(payment: dict) -> list[tuple[str, str, str | None]]:
    return [(a["channel"], a["status"], a.get("error_code")) for a in payment["attempts"]]


def assert_still_closed_for_others(stack, channel: str, amount: int) -> None:
    assert breaker.state(channel) == "closed"
    theirs = pay(builders.api(stack.client, "Theirs"), amount)
    assert theirs["status"] == "succeeded" and theirs["attempts"][0]["channel"] == channel, theirs
    assert "circuit_open" not in str(theirs)


def test_credentials_no_request_can_carry_never_open_the_channels_circuit(stack):
    """An account stored before the API refused such credentials: its requests are refused before
    sending, the payment goes on to the next candidate, and the channel's circuit stays closed."""
    mine = builders.api(stack.client, "Mine")
    builders.stored_channel_account(mine.merchant_id, {"api_key": LINE_BREAK}, channel="acq_alpha")
    for _ in range(TIMES):
        paid = pay(mine, ROUTED_TWICE)
        assert paid["status"] == "succeeded", paid
        assert channels_tried(paid) == [("acq_alpha", "failed", "channel_account_unusable"),
                                        ("acq_beta", "succeeded", None)]
    assert_still_closed_for_others(stack, "acq_alpha", ROUTED_TWICE)


def test_with_credentials_raising_fails_the_attempt_not_the_request_nor_the_circuit(stack, monkeypatch, caplog):
    """A plugin whose with_credentials raises (a KeyError here): no 500 and no payment left
    processing: nothing was sent, so the attempt failed; with no other candidate, the payment fails
    ``channel_account_unusable``, and its Idempotency-Key replays that."""
    def broken(self, credentials):
        raise KeyError("secret_" + credentials["api_key"])

    monkeypatch.setattr(SandboxChannel, "with_credentials", broken)
    mine = builders.api(stack.client, "Mine")
    key = "sbxkey_" + "7" * 32
    builders.revoked_channel_account(mine.merchant_id, key)  # on sandbox: a 20.00 USD payment's only candidate
    body = builders.payment_body(2000)
    first = mine.post("/v1/payments", body, key="broken-adapter")
    assert first.status_code == 201, first.get_json()
    failed = first.get_json()
    assert (failed["status"], failed["failure_code"]) == ("failed", "channel_account_unusable"), failed
    assert channels_tried(failed) == [("sandbox", "failed", "channel_account_unusable")]
    assert "KeyError" in failed["failure_message"] and key not in first.get_data(as_text=True)
    again = mine.post("/v1/payments", body, key="broken-adapter")
    assert again.headers.get("Idempotent-Replayed") == "true" and again.get_json() == failed
    assert key not in caplog.text and "with_credentials" in caplog.text
    for _ in range(TIMES):
        assert pay(mine)["failure_code"] == "channel_account_unusable"
    assert_still_closed_for_others(stack, "sandbox", 2000)


def test_the_psp_refusing_a_merchants_credentials_is_that_accounts_decline_and_nothing_of_the_channels(stack):
    """The sandbox refusing a merchant's key (401 to a charge made with it: the adapter raises
    CredentialsRefused): the payment fails at once ``channel_credentials_refused`` (no failover: the
    merchant's account is wrong, not the channel down), and none of it is the channel's: not its
    circuit, not the success rates the ``success_rate`` strategy routes by, not the Channels page's
    nor the Dashboard's. Another merchant's payments still go to the channel, and count."""
    mine = builders.api(stack.client, "Mine")
    builders.revoked_channel_account(mine.merchant_id, "sbxkey_" + "8" * 32, channel="acq_alpha")
    for _ in range(TIMES):
        refused = pay(mine, ROUTED_TWICE)
        assert (refused["status"], refused["failure_code"]) == ("failed", "channel_credentials_refused"), refused
        assert channels_tried(refused) == [("acq_alpha", "failed", "channel_credentials_refused")]
    assert success_rate_counts("acq_alpha") == (0, 0)
    assert channels.stats()["acq_alpha"]["answered"] == 0
    (alpha,) = [row for row in dashboard.data()["channels"] if row["channel"] == "acq_alpha"]
    assert (alpha["total"], sum(alpha["failed"]), alpha["total_success_rate"]) == (TIMES, 0, None), alpha
    assert_still_closed_for_others(stack, "acq_alpha", ROUTED_TWICE)
    assert success_rate_counts("acq_alpha") == (1, 1)  # the channel's own outcomes still count
    assert channels.stats()["acq_alpha"]["success_rate"] == 1.0


def test_a_merchants_refused_key_as_a_half_open_circuits_probe_is_given_back(stack):
    """The probe of a half-open circuit spent on one merchant's refused key proves nothing of the
    channel: given back (neither closing nor opening the circuit), so the next call probes."""
    mine, theirs = builders.api(stack.client, "Mine"), builders.api(stack.client, "Theirs")
    builders.revoked_channel_account(mine.merchant_id, "sbxkey_" + "9" * 32, channel="acq_alpha")
    for _ in range(breaker.MIN_CALLS):
        breaker.record("acq_alpha", ok=False)
    get_redis().delete("payrouter:breaker:acq_alpha:open")  # its cool-down over: half-open
    refused = pay(mine, ROUTED_TWICE)
    assert channels_tried(refused) == [("acq_alpha", "failed", "channel_credentials_refused")]
    # Given back, not counted a success: the circuit is still judging, and the next call is its probe
    # at once (not after the probe's lease ran out).
    assert breaker.allow("acq_alpha", now=time.time()) and breaker.state("acq_alpha") == "half_open"
    breaker.release("acq_alpha")
    probed = pay(theirs, ROUTED_TWICE)
    assert channels_tried(probed) == [("acq_alpha", "succeeded", None)]
    assert breaker.state("acq_alpha") == "closed"


def success_rate_counts(channel: str) -> tuple[int, int]:
    """(succeeded, outcomes) of the channel's USD card payments, as the success_rate strategy reads them."""
    counted = success_rates.counts((channel,), window_minutes=15, kind="payment", method="card", currency="USD")
    return counted[channel]


@pytest.mark.parametrize("value", [LINE_BREAK, "sbxkey_x\n", "sbxkey_\x00x", "sbxkey_\tx", "sbxkey_\x7fx",
                                   "sbxkey_ключ"])
def test_credentials_no_request_can_carry_are_refused_when_brought(stack, value):
    api = builders.api(stack.client)
    answer = api.post("/v1/channel_accounts", {"channel": "sandbox", "credentials": {"api_key": "s3cr3t" + value}})
    assert answer.status_code == 400, answer.get_json()
    error = answer.get_json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "parameter_invalid", "credentials[api_key]")
    assert "s3cr3t" not in answer.get_data(as_text=True)
    assert api.get("/v1/channel_accounts").get_json()["data"] == []
