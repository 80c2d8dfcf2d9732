"""Every bad input answers 4xx in the contract's error shape; none produces a 5xx."""
import json

import pytest

from tests import builders

JSON = "application/json"

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


# Each of these answered 500 before the request-level screening (on PostgreSQL every NUL did, on both
# backends every unpaired surrogate and every exponent too large for a Decimal).
CARD_PAYMENT = (b'{"amount": 100, "currency": "USD", "reference": "r-1", '
                b'"payment_method": {"type": "card", "brand": "visa", "country": "US", "last4": "4242"}')
BAD_TEXT_BODIES = [
    ("/v1/payments", CARD_PAYMENT + b', "description": "x\\u0000y"}', "description"),
    ("/v1/payments", CARD_PAYMENT + b', "metadata": {"k": "\\ud800"}}', "metadata[k]"),
    ("/v1/payments", CARD_PAYMENT + b', "metadata": {"k\\u0000": "v"}}', "metadata[k\\x00]"),
    ("/v1/accounts", b'{"currency": "USD", "customer": {"id": "\\ud800"}}', "customer[id]"),
    ("/v1/accounts", b'{"currency": "USD", "customer": {"id": "\\udfff\\ud800"}}', "customer[id]"),
    ("/v1/accounts", b'{"currency": "USD", "customer": {"id": "c\\u0000"}}', "customer[id]"),
    ("/v1/transfers", b'{"from_account": "acct_a", "to_account": "acct_b", "currency": "USD", "reference": "r", '
                      b'"amount": 1e999999999999999999999999}', "amount"),
    ("/v1/transfers", b'{"from_account": "acct_a", "to_account": "acct_b", "currency": "USD", "reference": "r", '
                      b'"amount": -1E-99999999999999999999999}', "amount"),
    ("/v1/transfers", b'{"from_account": "acct_a", "to_account": "acct_b", "currency": "USD", "reference": "r", '
                      b'"amount": 1' + b"0" * 5000 + b"}", "amount"),
    ("/v1/transfers", b'{"from_account": "acct_a", "to_account": "acct_b", "currency": "USD", "reference": "r", '
                      b'"amount": 18446744073709551616}', "amount"),
    ("/v1/routing/simulate", CARD_PAYMENT + b', "description": "\\u0000"}', "description"),
]


@pytest.mark.parametrize("path,raw,param", BAD_TEXT_BODIES)
def test_nul_surrogates_and_huge_numbers_in_bodies_are_400(client, path, raw, param):
    api = builders.api(client)
    response = client.post(path, data=raw, headers=api.headers(builders.unique(), **{"Content-Type": JSON}))
    error = assert_error_shape(response, 400)
    assert (error["code"], error["param"]) == ("parameter_invalid", param)


@pytest.mark.parametrize("raw", [b'{"currency": "USD", "customer": {"id": "\xed\xa0\x80"}}',
                                 b'{"currency": "USD", "customer": {"id": "\xff"}}',
                                 b'\xff\xfe{\x00}\x00', '{"currency": "USD"}'.encode("utf-16")])
def test_bodies_that_are_not_utf8_are_400(client, raw):
    api = builders.api(client)
    response = client.post("/v1/accounts", data=raw, headers=api.headers(builders.unique(), **{"Content-Type": JSON}))
    assert assert_error_shape(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize("path,param", [
    ("/v1/accounts?starting_after=%00", "starting_after"),
    ("/v1/accounts?starting_after=acct_%ED%A0%80", "starting_after"),
    ("/v1/accounts?limit=%00", "limit"),
    ("/v1/accounts?x%00=1", "x\\x00"),
    ("/v1/payments/pay_%00", "id"),
    ("/v1/accounts/acct_%00", "id"),
    ("/v1/accounts/acct_%00/entries", "id"),
    ("/v1/transfers/tr_%00", "id"),
    ("/v1/events/evt_%00", "id"),
    ("/v1/events/evt_%00/deliveries", "id"),
    ("/v1/webhook_endpoints/we_%00", "id"),
    ("/v1/refunds?starting_after=re_a%00", "starting_after"),
])
def test_nul_and_bad_utf8_in_paths_and_queries_are_400(client, path, param):
    api = builders.api(client)
    error = assert_error_shape(api.get(path), 400)
    assert (error["code"], error["param"]) == ("parameter_invalid", param)


@pytest.mark.parametrize("query", ["starting_after=" + "a" * 41, "starting_after=acct_x-y", "starting_after=ACCT_1"])
def test_malformed_starting_after_is_400(client, query):
    api = builders.api(client)
    assert assert_error_shape(api.get(f"/v1/accounts?{query}"), 400)["param"] == "starting_after"


def test_values_longer_than_their_column_are_400(client):
    """Every string the schemas let through fits its column (test_validation checks the two agree)."""
    api = builders.api(client)
    for field, size in (("reference", 201), ("description", 1001)):
        body = {**builders.payment_body(100), field: "x" * size}
        error = assert_error_shape(api.post("/v1/payments", body), 400)
        assert (error["code"], error["param"]) == ("parameter_invalid", field)
    long_id = "acct_" + "a" * 300
    assert_error_shape(api.get(f"/v1/accounts/{long_id}"), 404)


@pytest.mark.parametrize("method,path,allow", [
    ("put", "/v1/accounts", {"GET", "POST"}),
    ("delete", "/v1/payments", {"GET", "POST"}),
    ("post", "/v1/accounts/acct_x", {"GET"}),
    ("patch", "/v1/webhook_endpoints/we_x", {"GET", "DELETE"}),
])
def test_method_not_allowed_carries_allow_and_the_error_shape(client, method, path, allow):
    api = builders.api(client)
    response = getattr(client, method)(path, headers=api.headers(builders.unique()))
    error = assert_error_shape(response, 405)
    assert error["code"] == "method_not_allowed"
    assert allow <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_a_raw_bad_path_over_http_is_400(stack):
    """Over a real connection the path's bytes reach the app undecoded: ED A0 80 is not UTF-8."""
    import requests

    api = builders.api(stack.client)
    response = requests.get(f"{stack.api_url}/v1/accounts/acct_%ED%A0%80", headers=api.headers(), timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "id"
    response = requests.get(f"{stack.api_url}/v1/accounts?starting_after=%ED%A0%80", headers=api.headers(), timeout=10)
    assert (response.status_code, response.json()["error"]["param"]) == (400, "starting_after")


def test_an_ops_actor_fits_its_column(clean, configured):
    """The audited actor is "ops-api:" + the given one, in a 200-character column (on PostgreSQL a
    200-character actor was a 500)."""
    client = configured(clean.with_(ops_token="s3cret")).test_client()
    auth = {"Authorization": "Bearer s3cret"}
    body = {"name": "webhooks", "on": False, "reason": "x"}
    error = assert_error_shape(client.post("/ops/switches", json={**body, "actor": "a" * 200}, headers=auth), 400)
    assert error["param"] == "actor"
    response = client.post("/ops/switches", json={**body, "actor": "a" * 192}, headers=auth)
    assert response.status_code == 200 and response.get_json()["updated_by"] == "ops-api:" + "a" * 192
