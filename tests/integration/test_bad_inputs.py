"""Every bad input answers 4xx in the contract's error shape; none produces a 5xx."""
import json

import pytest

from tests import builders

BAD_BODIES = [
    (b"not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b"[]", 400, "invalid_json"),
    (b'{"currency": "USD"}', 400, "parameter_missing"),
    (b'{"currency": "USD", "customer": {"id": "c"}, "colour": "red"}', 400, "parameter_unknown"),
    (b'{"currency": "ZZZ", "customer": {"id": "c"}}', 400, "parameter_invalid"),
    (b'{"currency": "USD", "customer": "c-1"}', 400, "parameter_invalid"),
    (b'{"currency": "USD", "customer": {"id": "c", "country": "usa"}}', 400, "parameter_invalid"),
    (b'{"currency": "USD", "customer": {"id": ""}}', 400, "parameter_invalid"),
    (b'{"currency": "USD", "customer": {"id": "c"}, "metadata": {"k": 5}}', 400, "parameter_invalid"),
    (b'{"currency": "USD", "customer": {"id": "c"}, "metadata": {"k": "' + b"v" * 501 + b'"}}', 400,
     "parameter_invalid"),
    (b'{"currency": "USD", "customer": {"id": "c"}, "reference": "' + b"r" * 201 + b'"}', 400, "parameter_invalid"),
    (b'{"currency": "USD", "customer": {"id": "c"}, "reference": " padded "}', 400, "parameter_invalid"),
    (b'{"currency": "USD", "customer": {"id": "c"}}' + b" " * 70000, 400, "body_too_large"),
]


def assert_error_shape(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"type", "code", "message", "request_id"} <= set(error)
    assert error["code"] and error["message"] and error["request_id"] == response.headers["X-Request-Id"]
    return error


@pytest.mark.parametrize("raw,status,code", BAD_BODIES)
def test_bad_account_bodies(client, raw, status, code):
    api = builders.api(client)
    response = client.post("/v1/accounts", data=raw, headers=api.headers("k-" + builders.unique(),
                                                                         **{"Content-Type": "application/json"}))
    error = assert_error_shape(response, status)
    assert error["code"] == code and error["type"] == "invalid_request_error"


def test_unknown_field_names_param(client):
    api = builders.api(client)
    error = assert_error_shape(api.post("/v1/accounts", {"currency": "USD", "customer": {"id": "c"}, "x_y": 1}), 400)
    assert error["param"] == "x_y"


@pytest.mark.parametrize("amount", [1.5, 100.0, -1, 0, "100", None, 10**16, [1], {"v": 1}])
def test_bad_amounts(client, amount):
    api = builders.api(client)
    a, b = api.account(funded=10), api.account()
    body = api.transfer_body(a["id"], b["id"], 1)
    raw = json.dumps({**body, "amount": amount}).encode()
    response = client.post("/v1/transfers", data=raw, headers=api.headers(builders.unique()))
    error = assert_error_shape(response, 400)
    assert error["param"] == "amount"


@pytest.mark.parametrize("path", ["/v1/nothing", "/v1/accounts/acct_x/nothing", "/nowhere"])
def test_unknown_routes(client, path):
    api = builders.api(client)
    assert_error_shape(client.get(path, headers=api.headers()), 404)


def test_wrong_method(client):
    api = builders.api(client)
    assert_error_shape(client.delete("/v1/accounts", headers=api.headers()), 405)


@pytest.mark.parametrize("query", ["limit=0", "limit=1000", "limit=abc", "starting_after=acct_nope", "bogus=1"])
def test_bad_list_queries(client, query):
    api = builders.api(client)
    error = assert_error_shape(api.get(f"/v1/accounts?{query}"), 400)
    assert error["param"]


def test_missing_and_bad_idempotency_keys(client):
    api = builders.api(client)
    body = {"currency": "USD", "customer": {"id": "c"}}
    error = assert_error_shape(client.post("/v1/accounts", json=body, headers=api.headers()), 400)
    assert error["param"] == "Idempotency-Key"
    error = assert_error_shape(client.post("/v1/accounts", json=body, headers=api.headers("x" * 256)), 400)
    assert error["param"] == "Idempotency-Key"


def test_live_key_cannot_use_test_helpers(client):
    merchant_id, secret = builders.merchant(mode="live")
    api = builders.Api(client, secret, merchant_id)
    account = api.account()
    error = assert_error_shape(api.post(f"/v1/test_helpers/accounts/{account['id']}/fund", {"amount": 5}), 403)
    assert error["type"] == "permission_error"


@pytest.mark.parametrize("limit", ["%C2%B2", "%EF%BC%91", "1.0", "-1", "+5", " 5"])
def test_non_ascii_or_odd_limits_are_400(client, limit):
    api = builders.api(client)
    error = assert_error_shape(api.get(f"/v1/accounts?limit={limit}"), 400)
    assert error["param"] == "limit"
