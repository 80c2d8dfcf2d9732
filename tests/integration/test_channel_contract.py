"""The one contract every channel adapter must pass: charge → refund, a decline as data,
a fault as an exception. Add an adapter by adding a harness to ``HARNESSES``."""
from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest

from channels.base import Channel, ChannelResult, ChannelTimeout, ChannelUnavailable, ChargeRequest, RefundRequest
from channels.registry import load_channels
from channels.sandbox.server import SandboxServer
from channels.sandbox.testing import EXPLICIT_SECRETS, FAST_SANDBOX_OPTIONS, write_channels_file


@dataclass
class Harness:
    """How to drive one adapter: its channel and the amounts that produce each outcome."""

    channel: Channel
    currency: str
    ok_amount: int
    decline_amount: int
    fault: Callable[[], ChargeRequest]  # a request the channel answers with a fault
    fault_exception: type = ChannelUnavailable


def _request(amount: int, currency: str) -> ChargeRequest:
    return ChargeRequest("payment", "pay_" + uuid.uuid4().hex[:12], amount, currency,
                         {"type": "card", "brand": "visa", "country": "US", "last4": "4242"}, None, uuid.uuid4().hex)


def sandbox_harness(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_channels_file(tmp_path_factory.mktemp("contract") / "channels.yaml", f"http://127.0.0.1:{port}", 400)
    env = EXPLICIT_SECRETS  # no database here: explicit secrets, no generated ones
    server = SandboxServer("127.0.0.1", port, path, env=env, **FAST_SANDBOX_OPTIONS).start()
    channel = load_channels(path, env=env).get("sandbox")
    return Harness(channel, "USD", 2500, 2551, lambda: _request(2555, "USD")), server.stop


HARNESSES = {"sandbox": sandbox_harness}


@pytest.fixture(scope="module", params=sorted(HARNESSES))
def harness(request, tmp_path_factory):
    built, stop = HARNESSES[request.param](tmp_path_factory)
    yield built
    stop()


def test_charge_then_refund(harness):
    paid = harness.channel.charge(_request(harness.ok_amount, harness.currency))
    assert isinstance(paid, ChannelResult) and paid.status == "succeeded" and paid.channel_reference
    refund = RefundRequest("re_" + uuid.uuid4().hex[:12], paid.channel_reference, harness.ok_amount // 2,
                           harness.currency, None, uuid.uuid4().hex)
    refunded = harness.channel.refund(refund)
    assert refunded.status in ("succeeded", "processing") and refunded.channel_reference


def test_decline_is_data(harness):
    result = harness.channel.charge(_request(harness.decline_amount, harness.currency))
    assert result.status == "failed" and result.error_code


def test_fault_is_an_exception(harness):
    with pytest.raises(harness.fault_exception):
        harness.channel.charge(harness.fault())


def test_query_knows_what_was_charged(harness):
    req = _request(harness.ok_amount, harness.currency)
    paid = harness.channel.charge(req)
    assert harness.channel.query(req.reference).channel_reference == paid.channel_reference


def test_fault_classes_never_overlap():
    assert not issubclass(ChannelTimeout, ChannelUnavailable) and not issubclass(ChannelUnavailable, ChannelTimeout)
