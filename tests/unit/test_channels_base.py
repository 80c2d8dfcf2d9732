"""The channel interface: frozen requests/results, capability checks, the exception tree, signing."""
from __future__ import annotations

import dataclasses
import time

import pytest

from app.domain.errors import ChannelError, PayRouterError
from channels.base import (
    Channel,
    ChannelResult,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRequest,
    InvalidCallback,
    OperationNotSupported,
    RefundRequest,
)
from channels.config import ChannelSpec, Cost
from channels.sandbox import signing
from channels.sandbox.outcomes import outcome_for


class MinimalChannel(Channel):
    def charge(self, req):
        return ChannelResult("succeeded", "m_1")

    def query(self, reference, channel_reference=None):
        return ChannelResult("succeeded", "m_1")

    def verify_callback(self, headers, body):
        raise InvalidCallback("never")


SPEC = ChannelSpec("mini", "x.y:Z", ("card",), ("USD", "EUR"), ("payment", "refund"), Cost(), 500)


def test_requests_and_results_are_frozen():
    req = ChargeRequest("payment", "pay_1", 1000, "USD", {"type": "card"}, None, "k1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.amount = 1  # type: ignore[misc]
    result = ChannelResult("failed", None, "card_declined")
    assert result.raw == {} and result.error_message is None


@pytest.mark.parametrize("exc", [ChannelUnavailable, ChannelTimeout, OperationNotSupported, InvalidCallback])
def test_channel_exceptions_share_the_error_root(exc):
    assert issubclass(exc, ChannelError) and issubclass(exc, PayRouterError)
    assert exc("x").code != ChannelError.code


def test_supports_names_the_drop_reason():
    ch = MinimalChannel(SPEC, "s")
    assert ch.supports("payment", "USD", "card") is None
    assert ch.supports("refund", "EUR") is None
    assert ch.supports("withdrawal", "USD", "card") == "unsupported_operation"
    assert ch.supports("payment", "JPY", "card") == "unsupported_currency"
    assert ch.supports("payment", "USD", "wallet") == "unsupported_method"
    assert (ch.id, ch.timeout_ms, ch.methods) == ("mini", 500, ("card",))


def test_optional_operations_raise_operation_not_supported():
    ch = MinimalChannel(SPEC, "s")
    with pytest.raises(OperationNotSupported):
        ch.refund(RefundRequest("re_1", "m_1", 10, "USD", None, "k"))
    with pytest.raises(OperationNotSupported):
        ch.statement(None)
    with pytest.raises(TypeError):
        Channel(SPEC, "s")  # abstract


@pytest.mark.parametrize("percent,fixed,amount,fee", [
    ("2.9", 30, 1000, 59), ("1.5", 0, 1, 0), ("1.5", 0, 100, 2), ("2.5", 0, 10, 0), ("5", 0, 10, 1), ("0", 7, 5, 7),
])
def test_cost_fee_rounds_half_up_in_minor_units(percent, fixed, amount, fee):
    from decimal import Decimal
    assert Cost(Decimal(percent), fixed).fee(amount) == fee


def test_signature_round_trip_and_rejections():
    body = b'{"id":"sbxevt_1"}'
    headers = signing.signed_headers("sec", body)
    assert signing.verify("sec", headers, body) == int(headers[signing.TIMESTAMP_HEADER])
    lower = {k.lower(): v for k, v in headers.items()}
    signing.verify("sec", lower, body)  # header names are case-insensitive
    for bad_secret, bad_body, bad_headers in [
        ("other", body, headers),
        ("sec", body + b" ", headers),
        ("sec", body, {}),
        ("sec", body, {**headers, signing.TIMESTAMP_HEADER: "soon"}),
        ("sec", body, signing.signed_headers("sec", body, now=time.time() - 301)),
        ("sec", body, signing.signed_headers("sec", body, now=time.time() + 301)),
    ]:
        with pytest.raises(InvalidCallback):
            signing.verify(bad_secret, bad_headers, bad_body)


def test_rotated_signatures_accept_any_match():
    body = b"{}"
    headers = signing.signed_headers("new", body)
    headers[signing.SIGNATURE_HEADER] = "v1=deadbeef " + headers[signing.SIGNATURE_HEADER]
    signing.verify("new", headers, body)


@pytest.mark.parametrize("amount,initial,final,callbacks", [
    (1000, "succeeded", None, 0), (1049, "succeeded", None, 0), (1050, "succeeded", None, 0),
    (1051, "failed", None, 0), (1052, "processing", "succeeded", 1), (1053, "processing", "failed", 1),
    (1054, "succeeded", None, 0), (1055, None, None, 0), (1056, "processing", "succeeded", 3),
    (1058, "succeeded", None, 0), (1099, "succeeded", None, 0), (51, "failed", None, 0),
])
def test_outcome_table(amount, initial, final, callbacks):
    outcome = outcome_for(amount)
    assert (outcome.initial, outcome.final, outcome.callbacks) == (initial, final, callbacks)
    assert outcome.hang == (amount % 100 == 54) and outcome.http_error == (amount % 100 == 55)
    assert outcome.dispute == (amount % 100 == 58)
