"""A callback is refused with a 4xx, never a 5xx, whatever its headers or its (signed) body hold:
/callbacks is open to anyone, so its signature check must not crash on what it parses."""
import json
import time

import pytest
import requests
from sqlalchemy import func, select

from app.adapters.channels_runtime import channel
from app.adapters.db import unit_of_work
from app.adapters.models import ChannelCallback
from channels.sandbox.signing import signed_headers
from tests import builders


def post_callback(stack, body: bytes, headers: dict) -> requests.Response:
    return requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers, timeout=10)


def stored_callbacks() -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(ChannelCallback))


@pytest.mark.parametrize("timestamp, signature", [
    ("1" + "0" * 400, "v1=" + "0" * 64),  # a timestamp no float holds
    ("9" * 30, "v1=" + "0" * 64),
    ("-" + "9" * 30, "v1=" + "0" * 64),
    (None, "v1=\u00ff" + "0" * 62),  # a signature that is not ASCII (raw byte 0xFF on the wire)
    (None, "v1=" + "0" * 64 + " v1=\u00e9"),
])
def test_odd_signature_headers_are_refused_401_not_500(stack, timestamp, signature):
    body = b'{"id": "e1", "channel": "sandbox", "data": {}}'
    headers = {"X-Sandbox-Timestamp": timestamp or str(int(time.time())), "X-Sandbox-Signature": signature,
               "Content-Type": "application/json"}
    response = requests.post(f"{stack.api_url}/callbacks/sandbox",
                             data=body, headers={k: v.encode("latin-1") for k, v in headers.items()}, timeout=10)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_signature"
    assert stored_callbacks() == 0


def _signed(data: dict) -> tuple[bytes, dict]:
    body = json.dumps({"id": builders.unique("sbxevt"), "channel": "sandbox",
                       "data": {"channel": "sandbox", **data}}).encode()
    return body, {**signed_headers(channel("sandbox").secret, body), "Content-Type": "application/json"}


def test_a_signed_callback_with_fields_no_column_takes_is_400_not_500(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(8054)).get_json()  # timed out: no reference yet
    assert payment["status"] == "processing"
    bad = [
        {"id": "sbx_1", "reference": "pay_\u0000", "status": "succeeded"},
        {"id": "sbx_1", "reference": "pay_\ud800", "status": "succeeded"},
        {"id": "sbx_1", "reference": ["pay_x"], "status": "succeeded"},
        {"id": {"x": 1}, "reference": payment["id"], "status": "succeeded"},
        {"id": "sbx_" + "1" * 5000, "reference": payment["id"], "status": "succeeded"},
        {"id": "sbx_1\u0000", "reference": payment["id"], "status": "succeeded"},
        {"id": "sbx_1", "reference": payment["id"], "status": "failed", "error_code": "x" * 5000},
        {"id": "sbx_1", "reference": payment["id"], "status": "failed", "error_code": 5},
    ]
    for data in bad:
        body, headers = _signed(data)
        response = post_callback(stack, body, headers)
        assert response.status_code == 400, (data, response.text)
        assert response.json()["error"]["code"] == "callback_malformed"
    assert stored_callbacks() == 0
    stack.work()
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["status"] in ("processing", "succeeded")
