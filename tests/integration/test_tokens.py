"""Card tokens (contract §1 payment_method.token, §4 the sandbox's vault), through the public API with
the sandbox over HTTP: a token reaches the channel's adapter and nothing else. It is searched for in
every answer, every log line (caplog and the JSON log output), every column of every table and every
webhook sent."""
import json
import logging
import secrets

import pytest
import urllib3

from channels.base import ChargeRequest
from tests import builders
from tests.support import database_text
from tests.webhook_support import create_endpoint, pump, webhook_config


def card(token: str, **fields) -> dict:
    return {**builders.CARD, "token": token, **fields}


def test_a_token_reaches_the_channel_and_is_never_stored_logged_or_answered(stack, caplog, json_log, receiver):
    caplog.set_level(logging.DEBUG)
    stack.serve(webhook_config(stack.config))  # webhooks to a local receiver
    api = builders.api(stack.client)
    hooks = receiver()
    create_endpoint(api, hooks.url)
    issued = builders.card_token(stack.sandbox_url)
    token = issued["token"]
    assert token.startswith("tok_") and issued["brand"] == "visa" and issued["last4"] == "4242"
    answers = []

    body = builders.payment_body(2000, payment_method=card(token))
    first = api.post("/v1/payments", body, key="pay-with-token")
    assert first.status_code == 201, first.get_json()
    payment = first.get_json()
    assert payment["status"] == "succeeded"
    assert payment["payment_method"] == builders.CARD  # as described, without the token
    replay = api.post("/v1/payments", body, key="pay-with-token")  # replay: same bytes, nothing new
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.data == first.data
    other = api.post("/v1/payments", {**body, "payment_method": card(builders.card_token(stack.sandbox_url)["token"])},
                     key="pay-with-token")  # the same key with another card: a different request
    assert other.status_code == 422 and other.get_json()["error"]["type"] == "idempotency_error"
    answers += [first, replay, other]

    # A declined and a soft-declined charge, a top-up and a refund carry or follow the token too.
    for amount in (2051, 2059):
        declined = api.post("/v1/payments", builders.payment_body(amount, payment_method=card(token)))
        assert declined.get_json()["status"] == "failed"
        answers.append(declined)
    account = api.account()
    topup = api.post("/v1/topups", {"account": account["id"], "amount": 1500, "currency": "USD",
                                    "payment_method": card(token), "reference": builders.unique("top")})
    assert topup.status_code == 201 and topup.get_json()["status"] == "succeeded", topup.get_json()
    refund = api.post("/v1/refunds", {"payment": payment["id"], "reference": builders.unique("re")})
    assert refund.status_code == 201, refund.get_json()
    simulated = api.post("/v1/routing/simulate", builders.payment_body(2000, payment_method=card(token)))
    assert simulated.status_code == 200, simulated.get_json()
    answers += [topup, refund, simulated, api.get(f"/v1/payments/{payment['id']}"), api.get("/v1/payments"),
                api.get("/v1/events")]
    pump()  # the webhooks of every event go out

    assert len(hooks.requests) >= 5
    assert all(token.encode() not in request["body"] for request in hooks.requests)
    for answer in answers:
        assert token not in answer.get_data(as_text=True)
    assert token not in database_text()
    assert token not in caplog.text
    assert caplog.records and token not in json_log.getvalue() and json_log.getvalue()


def test_a_malformed_token_is_refused_without_being_quoted(stack):
    api = builders.api(stack.client)
    malformed = "tok_" + secrets.token_hex(8) + "-not/a/token"
    response = api.post("/v1/payments", builders.payment_body(2000, payment_method=card(malformed)))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == "payment_method[token]" and error["code"] == "parameter_invalid"
    assert malformed not in response.get_data(as_text=True)
    balance = api.post("/v1/payments", builders.payment_body(2000, payment_method={
        "type": "balance", "account": api.account()["id"], "token": "tok_" + secrets.token_hex(8)}))
    assert balance.status_code == 400 and balance.get_json()["error"]["param"] == "payment_method[token]"


def test_a_token_the_vault_did_not_issue_fails_invalid_token_and_is_final(stack):
    api = builders.api(stack.client)
    # 100000 USD by card: routed to [acq_alpha, acq_beta] by the demo rules; a refused token is not retried.
    made_up = api.post("/v1/payments", builders.payment_body(100_000, payment_method=card("tok_" + "0" * 32)))
    assert made_up.status_code == 201, made_up.get_json()
    payment = made_up.get_json()
    assert payment["status"] == "failed" and payment["failure_code"] == "invalid_token" and payment["fee"] == 0
    assert payment["attempts"] == [{"channel": "acq_alpha", "status": "failed", "error_code": "invalid_token"}]
    # A token the vault bound to another channel is foreign to this one.
    theirs = builders.card_token(stack.sandbox_url, channel="acq_beta")["token"]
    refused = api.post("/v1/payments", builders.payment_body(2000, payment_method=card(theirs))).get_json()
    assert refused["status"] == "failed" and refused["failure_code"] == "invalid_token"
    assert refused["attempts"] == [{"channel": "sandbox", "status": "failed", "error_code": "invalid_token"}]


@pytest.mark.parametrize("change,param", [
    ({"number": "4242424242424241"}, "number"),  # fails the Luhn check
    ({"number": "4242-4242"}, "number"),
    ({"exp_month": 13}, "exp_month"),
    ({"exp_year": 2001}, "exp_year"),
    ({"cvc": "12"}, "cvc"),
    ({"channel": "nowhere"}, "channel"),
])
def test_the_vault_refuses_what_is_not_a_card(stack, change, param):
    body = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123", **change}
    answer = urllib3.request("POST", f"{stack.sandbox_url}/tokens", body=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
    assert answer.status == 400
    assert json.loads(answer.data)["error"]["code"] == f"invalid_{param}"


def test_a_charge_request_never_shows_its_token():
    request = ChargeRequest("payment", "pay_1", 1000, "USD", builders.CARD, None, "k1", token="tok_secret123")
    assert "tok_secret123" not in repr(request) and request.token == "tok_secret123"
