"""Every row of the sandbox table, driven through the adapter over real HTTP (contract §4)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
import uuid

import pytest
import requests

from app import context
from channels.base import (
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRequest,
    InvalidCallback,
    PayoutRequest,
    RefundRequest,
)
from channels.registry import load_channels
from channels.sandbox import signing
from channels.sandbox.server import STATEMENT_HEADER, SandboxServer
from channels.sandbox.testing import EXPLICIT_SECRETS, FAST_SANDBOX_OPTIONS, CallbackReceiver, write_channels_file
from tests.live import free_port

TIMEOUT_MS = 400
ENV = EXPLICIT_SECRETS  # no database here: explicit secrets, no generated ones


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    path = write_channels_file(tmp_path_factory.mktemp("sbx") / "channels.yaml", "http://127.0.0.1:1", TIMEOUT_MS)
    server = SandboxServer("127.0.0.1", 0, path, env=ENV, **FAST_SANDBOX_OPTIONS)  # port 0: no race for it
    write_channels_file(path, server.url, TIMEOUT_MS)
    with server:
        server.channels_path = path
        yield server


@pytest.fixture(scope="module")
def registry(sandbox):
    return load_channels(sandbox.channels_path, env=ENV)


@pytest.fixture(scope="module")
def receiver():
    with CallbackReceiver() as rec:
        yield rec


@pytest.fixture
def hook(receiver):
    """A unique callback URL per test."""
    path = f"/callbacks/{uuid.uuid4().hex}"
    return path, receiver.url + path


def charge(channel, amount, callback_url=None, currency="USD", key=None, operation="payment"):
    ref = "pay_" + uuid.uuid4().hex[:12]
    req = ChargeRequest(operation, ref, amount, currency, {"type": "card", "brand": "visa", "last4": "4242"},
                        callback_url, key or uuid.uuid4().hex)
    return req, channel.charge(req)


@pytest.mark.parametrize("amount", [1000, 1049, 1050, 1099, 7, 1])
def test_succeeded_at_once(registry, amount):
    _, result = charge(registry.get("sandbox"), amount)
    assert result.status == "succeeded" and result.channel_reference.startswith("sbx_")
    assert result.error_code is None and result.raw["amount"] == amount


def test_51_is_a_decline_as_data(registry):
    _, result = charge(registry.get("acq_beta"), 1051)
    assert (result.status, result.error_code) == ("failed", "card_declined")
    assert result.channel_reference


@pytest.mark.parametrize("amount,final,error_code", [(1052, "succeeded", None), (1053, "failed", "card_declined")])
def test_52_53_processing_then_one_signed_callback(registry, receiver, hook, amount, final, error_code):
    path, url = hook
    channel = registry.get("acq_alpha")
    with context.bound("req_cb_test"):
        req, result = charge(channel, amount, url)
    assert result.status == "processing"
    got = receiver.wait_for(path, 1)
    event = channel.verify_callback(got[0].headers, got[0].body)
    assert (event.status, event.error_code) == (final, error_code)
    assert (event.channel_reference, event.reference) == (result.channel_reference, req.reference)
    assert got[0].headers["X-Request-Id"] == "req_cb_test"
    time.sleep(0.3)
    assert len(receiver.for_path(path, None)) == 1
    assert channel.query(req.reference).status == final
    assert channel.query(req.reference, result.channel_reference).error_code == error_code


def test_56_the_succeeded_callback_arrives_three_times(registry, receiver, hook):
    path, url = hook
    channel = registry.get("sandbox")
    _, result = charge(channel, 2056, url)
    assert result.status == "processing"
    got = receiver.wait_for(path, 3)
    events = [channel.verify_callback(r.headers, r.body) for r in got]
    assert {e.status for e in events} == {"succeeded"}
    assert len({e.dedupe_key for e in events}) == 1 and events[0].channel_reference == result.channel_reference


def test_58_succeeds_then_a_dispute_is_reported_and_closed_by_the_networks_ruling(sandbox, registry, receiver,
                                                                                  hook):
    path, url = hook
    channel = registry.get("sandbox")
    req, result = charge(channel, 2058, url)
    assert result.status == "succeeded"
    first = receiver.wait_for(path, 1)[0]
    reported = channel.verify_callback(first.headers, first.body)
    notice = reported.dispute
    assert (reported.reference, reported.channel_reference) == (req.reference, result.channel_reference)
    assert notice.channel_reference.startswith("sbxdp_") and notice.channel_reference != result.channel_reference
    assert (notice.status, notice.amount, notice.currency, notice.reason) == ("needs_response", 2058, "USD",
                                                                             "fraudulent")
    assert channel.query(req.reference).status == "succeeded"  # asked by our reference: the payment, not its dispute
    close = f"{sandbox.url}/disputes/{notice.channel_reference}/close"
    assert requests.post(close, json={"status": "maybe"}, timeout=2).status_code == 400
    unknown = requests.post(f"{sandbox.url}/disputes/sbxdp_nope/close", json={"status": "won"}, timeout=2)
    assert unknown.status_code == 404
    assert requests.post(close, json={"status": "lost"}, timeout=2).json()["status"] == "lost"
    again = requests.post(close, json={"status": "won"}, timeout=2)
    assert again.status_code == 409 and again.json()["error"]["code"] == "dispute_closed"
    got = receiver.wait_for(path, 2)
    ruled = channel.verify_callback(got[1].headers, got[1].body)
    assert (ruled.dispute.channel_reference, ruled.dispute.status) == (notice.channel_reference, "lost")
    assert ruled.dedupe_key != reported.dedupe_key
    today = dt.datetime.now(dt.timezone.utc).date()
    lines = {line.channel_reference: line for line in channel.statement(today)}
    line = lines[notice.channel_reference]
    assert (line.operation, line.amount, line.currency, line.status, line.fee) == ("dispute", 2058, "USD", "lost", 0)


def test_58_is_a_payments_outcome_a_topup_is_not_disputed(registry, receiver, hook):
    path, url = hook
    _, result = charge(registry.get("sandbox"), 2058, url, operation="topup")
    assert result.status == "succeeded"
    time.sleep(FAST_SANDBOX_OPTIONS["dispute_delay"] + 0.5)
    assert receiver.for_path(path, None) == []


def test_callbacks_are_retried_until_2xx(sandbox, registry, hook):
    with CallbackReceiver(fail_first=2) as flaky:
        path = hook[0]
        _, result = charge(registry.get("sandbox"), 1052, flaky.url + path)
        got = flaky.wait_for(path, 1)
        assert [r.status for r in flaky.for_path(path, None)] == [500, 500, 200]
        assert registry.get("sandbox").verify_callback(got[0].headers, got[0].body).status == "succeeded"


def test_forged_tampered_and_stale_callbacks_are_rejected(registry, receiver, hook):
    path, url = hook
    alpha, beta = registry.get("acq_alpha"), registry.get("acq_beta")
    charge(alpha, 1052, url)
    good = receiver.wait_for(path, 1)[0]
    alpha.verify_callback(good.headers, good.body)
    tampered = good.body.replace(b'"succeeded"', b'"failed"')
    cases = [
        (alpha, good.headers, tampered),  # tampered body
        (beta, good.headers, good.body),  # another channel's secret
        (alpha, {"Content-Type": "application/json"}, good.body),  # unsigned
        (alpha, signing.signed_headers("forged", good.body), good.body),  # wrong key
        (alpha, signing.signed_headers(alpha.secret, good.body, now=time.time() - 600), good.body),  # stale
        (alpha, signing.signed_headers(alpha.secret, b"not json"), b"not json"),  # malformed
    ]
    for channel, headers, body in cases:
        with pytest.raises(InvalidCallback):
            channel.verify_callback(headers, body)
    # correctly signed with alpha's secret but claiming to be for beta
    body = json.dumps({**json.loads(good.body), "channel": "acq_beta"}).encode()
    with pytest.raises(InvalidCallback):
        alpha.verify_callback(signing.signed_headers(alpha.secret, body), body)


def test_54_times_out_then_query_says_succeeded(registry):
    channel = registry.get("acq_beta")
    started = time.monotonic()
    req = ChargeRequest("payment", "pay_timeout_" + uuid.uuid4().hex[:6], 1054, "EUR", {"type": "card"}, None, "k54")
    with pytest.raises(ChannelTimeout):
        channel.charge(req)
    assert time.monotonic() - started < TIMEOUT_MS / 1000 + 0.5
    result = channel.query(req.reference)  # we never saw their reference
    assert result.status == "succeeded" and result.channel_reference.startswith("sbx_")


def test_55_is_a_fault_and_nothing_was_recorded(registry):
    channel = registry.get("acq_alpha")
    req = ChargeRequest("payment", "pay_fault_" + uuid.uuid4().hex[:6], 1055, "USD", {"type": "card"}, None, "k55")
    with pytest.raises(ChannelUnavailable):
        channel.charge(req)
    assert (channel.query(req.reference).status, channel.query(req.reference).error_code) == ("failed", "not_found")


def test_connection_refused_is_unavailable(sandbox, tmp_path):
    path = write_channels_file(tmp_path / "dead.yaml", f"http://127.0.0.1:{free_port()}", TIMEOUT_MS)
    with pytest.raises(ChannelUnavailable):
        charge(load_channels(path, env=ENV).get("sandbox"), 1000)


def test_wrong_secret_is_unavailable(sandbox):
    channel = load_channels(sandbox.channels_path, env={**ENV, "ACQ_ALPHA_SECRET": "wrong"}).get("acq_alpha")
    with pytest.raises(ChannelUnavailable):
        charge(channel, 1000)


def test_same_idempotency_key_is_one_operation(registry):
    channel = registry.get("sandbox")
    req, first = charge(channel, 1234, key="same-key")
    again = channel.charge(req)
    assert again.channel_reference == first.channel_reference
    other = ChargeRequest("payment", req.reference, 999, "USD", {"type": "card"}, None, "same-key")
    assert channel.charge(other).error_code == "idempotency_conflict"


def test_refunds_and_payouts(registry):
    channel = registry.get("sandbox")
    req, paid = charge(channel, 5000, currency="JPY")
    refund = RefundRequest("re_1", paid.channel_reference, 3000, "JPY", None, uuid.uuid4().hex)
    assert channel.refund(refund).status == "succeeded"
    too_much = RefundRequest("re_2", paid.channel_reference, 2001, "JPY", None, uuid.uuid4().hex)
    assert channel.refund(too_much).error_code == "amount_too_large"
    declined = RefundRequest("re_3", paid.channel_reference, 1951, "JPY", None, uuid.uuid4().hex)
    assert channel.refund(declined).error_code == "card_declined"
    payout = PayoutRequest("wd_1", 12345, "KWD", {"type": "bank_account", "country": "KW", "last4": "0001"}, None, "p1")
    assert channel.payout(payout).status == "succeeded"
    _, topup = charge(channel, 800, operation="topup", currency="CNY")
    assert topup.raw["operation"] == "topup"


def test_request_id_travels_to_the_channel(registry, sandbox):
    channel = registry.get("sandbox")
    with context.bound("req_travel_1"):
        resp = requests.get(f"{sandbox.url}/v1/channels/sandbox/operations", params={"reference": "x"},
                            headers=context.outgoing_headers({"Authorization": f"Bearer {channel.secret}"}), timeout=2)
    assert resp.headers["X-Request-Id"] == "req_travel_1"


def test_statement_csv(registry, sandbox):
    channel = registry.get("acq_beta")
    _, ok = charge(channel, 10000, currency="GBP")
    _, declined = charge(channel, 10051, currency="GBP")
    today = dt.datetime.now(dt.timezone.utc).date()
    resp = requests.get(f"{sandbox.url}/statements/{today.isoformat()}", params={"channel": "acq_beta"}, timeout=2)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert resp.text.splitlines()[0] == "channel_reference,operation,amount,currency,status,fee,settled_at"
    rows = {r["channel_reference"]: r for r in csv.DictReader(io.StringIO(resp.text))}
    assert list(next(csv.reader(io.StringIO(resp.text)))) == STATEMENT_HEADER
    assert rows[ok.channel_reference]["fee"] == "175"  # 1.5% of 10000 + 25
    assert (rows[declined.channel_reference]["status"], rows[declined.channel_reference]["fee"]) == ("failed", "0")
    lines = {line.channel_reference: line for line in channel.statement(today)}
    assert lines[ok.channel_reference].amount == 10000 and lines[ok.channel_reference].fee == 175
    assert lines[ok.channel_reference].settled_at.tzinfo is not None
    assert list(channel.statement(today - dt.timedelta(days=3))) == []
    bad = requests.get(f"{sandbox.url}/statements/2024-13-01", params={"channel": "acq_beta"}, timeout=2)
    assert bad.status_code == 400


def test_54_outlasts_the_timeout_the_adapter_announces(sandbox, tmp_path):
    """The router's file may give a longer timeout than the sandbox's: the adapter tells it."""
    path = write_channels_file(tmp_path / "longer.yaml", sandbox.url, TIMEOUT_MS + 300)
    channel = load_channels(path, env=ENV).get("sandbox")
    with pytest.raises(ChannelTimeout):
        charge(channel, 3054)


def test_the_sandbox_command_keeps_connections_alive_and_sends_callbacks(tmp_path, receiver, hook):
    """`payrouter sandbox` (one process, a thread per connection): the router's kept-alive connection serves
    several requests, and a processing charge is settled by the worker's callback thread."""
    import http.client
    import os
    import subprocess
    import sys

    from tests.live import wait_http

    port = free_port()
    path = write_channels_file(tmp_path / "channels.yaml", f"http://127.0.0.1:{port}", TIMEOUT_MS)
    proc = subprocess.Popen([sys.executable, "-m", "app", "sandbox", "--port", str(port)],
                            env={**os.environ, "PAYROUTER_CHANNELS": str(path), **ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, proc=proc)
        channel = load_channels(path, env=ENV).get("sandbox")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.connect()
        first_socket = conn.sock
        for _ in range(3):
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            assert answer.status == 200 and answer.getheader("Connection", "").lower() != "close"
            answer.read()
        assert conn.sock is first_socket  # one connection for all three
        conn.close()
        hook_path, url = hook
        result = channel.charge(ChargeRequest(operation="payment", reference=uuid.uuid4().hex, amount=2052,
                                              currency="USD", payment_method={"type": "card"}, callback_url=url,
                                              idempotency_key=uuid.uuid4().hex))
        assert result.status == "processing"
        got = receiver.wait_for(hook_path, 1, timeout=10)
        assert channel.verify_callback(got[0].headers, got[0].body).status == "succeeded"  # signed, settled
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_unknown_routes_wrong_methods_and_bad_bodies_are_4xx(sandbox):
    auth = {"Authorization": "Bearer " + signing_secret(sandbox)}
    assert requests.get(f"{sandbox.url}/nope", timeout=2).status_code == 404
    wrong = requests.get(f"{sandbox.url}/v1/channels/sandbox/charges", headers=auth, timeout=2)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    bad = requests.post(f"{sandbox.url}/v1/channels/sandbox/charges", data=b"{not json", timeout=2,
                        headers={**auth, "Idempotency-Key": "k", "X-Request-Id": "req_bad"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
    assert bad.headers["X-Request-Id"] == "req_bad"
    unauthorized = requests.post(f"{sandbox.url}/v1/channels/sandbox/charges", json={}, timeout=2)
    assert unauthorized.status_code == 401
    assert requests.get(f"{sandbox.url}/v1/channels/nope/operations/x", timeout=2).status_code == 404


def signing_secret(sandbox) -> str:
    return sandbox.psp.channels["sandbox"].secret


def test_a_failing_route_answers_500_with_the_request_id(sandbox, monkeypatch):
    def broken(_request):
        raise RuntimeError("a bug")

    monkeypatch.setattr(sandbox.psp, "_route", broken)
    resp = requests.get(f"{sandbox.url}/healthz", headers={"X-Request-Id": "req_500"}, timeout=2)
    assert resp.status_code == 500 and resp.json()["error"]["code"] == "internal_error"
    assert resp.headers["X-Request-Id"] == "req_500"
