"""Rules in the flows: declines, limits, no route, switches, circuit breakers, simulate."""
from app.services import breaker, switches
from tests import builders


def assert_402(response, code):
    assert response.status_code == 402, response.get_json()
    error = response.get_json()["error"]
    assert error["type"] == "payment_declined" and error["code"] == code
    assert error["decision"]["object"] == "routing_decision" and error["decision"]["outcome"] == "decline"
    return error


def test_rule_decline_names_the_rule_and_writes_nothing(stack):
    api = builders.api(stack.client)
    body = builders.payment_body(1000, customer={"id": "c1", "country": "KP"})
    error = assert_402(api.post("/v1/payments", body), "rule_declined")
    assert "block-sanctioned" in error["message"] and "country_blocked" in error["message"]
    assert error["decision"]["matched_rules"] == ["block-sanctioned"]
    assert api.get("/v1/payments").get_json()["data"] == []


def test_max_amount_limit(stack):
    api = builders.api(stack.client)
    error = assert_402(api.post("/v1/payments", builders.payment_body(5_000_100)), "limit_exceeded")
    assert "big-usd-cards" in error["message"]


def test_daily_amount_limit_reserved_and_given_back(stack):
    api = builders.api(stack.client)
    account = api.account(funded=5_000_000)
    body = {"account": account["id"], "currency": "USD", "destination": {"type": "bank_account", "country": "US",
                                                                         "last4": "1234"}}
    ok = api.post("/v1/withdrawals", {**body, "amount": 1_000_000, "reference": "w1"})
    assert ok.status_code == 201 and ok.get_json()["status"] == "succeeded"
    failed = api.post("/v1/withdrawals", {**body, "amount": 999_951, "reference": "w2"})  # declined by the channel
    assert failed.get_json()["status"] == "failed"
    ok2 = api.post("/v1/withdrawals", {**body, "amount": 1_000_000, "reference": "w3"})  # the failed one gave back
    assert ok2.status_code == 201
    error = assert_402(api.post("/v1/withdrawals", {**body, "amount": 100, "reference": "w4"}), "limit_exceeded")
    assert "withdrawal-limits" in error["message"]


def test_no_route(stack):
    api = builders.api(stack.client)
    error = assert_402(api.post("/v1/payments", builders.payment_body(1000, currency="CHF")), "no_route")
    assert error["decision"]["dropped"] == [{"channel": "sandbox", "reason": "unsupported_currency"}]


def test_switched_off_channel_is_dropped_and_paused_operation_refused(stack):
    api = builders.api(stack.client)
    switches.set("channel:acq_alpha", True, actor="ops", reason="maintenance")
    payment = api.post("/v1/payments", builders.payment_body(100_000)).get_json()
    assert payment["routing"]["dropped"] == [{"channel": "acq_alpha", "reason": "switched_off"}]
    assert payment["routing"]["channel"] == "acq_beta" and payment["status"] == "succeeded"
    switches.set("operation:payment", True, actor="ops", reason="incident")
    response = api.post("/v1/payments", builders.payment_body(1000))
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "operation_paused"
    assert response.headers["Retry-After"] == str(switches.RETRY_AFTER_SECONDS) == "30"  # not every second
    switches.set("operation:payment", False, actor="ops")
    switches.set("read_only", True, actor="ops")
    response = api.post("/v1/payments", builders.payment_body(1000))
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "read_only"
    assert response.headers["Retry-After"] == "30"
    switches.set("read_only", False, actor="ops")
    assert api.post("/v1/payments", builders.payment_body(1000)).status_code == 201


def test_open_circuit_drops_its_channel(stack):
    api = builders.api(stack.client)
    for _ in range(breaker.MIN_CALLS):
        breaker.record("acq_alpha", ok=False)
    assert breaker.state("acq_alpha") == "open"
    decision = api.post("/v1/routing/simulate", builders.payment_body(100_000)).get_json()
    assert decision["dropped"] == [{"channel": "acq_alpha", "reason": "circuit_open"}]
    assert decision["candidates"] == ["acq_beta"]


def test_breaker_half_opens_with_one_probe_and_closes_on_success():
    import time

    now = time.time()
    channel = f"probe-test-{now}"
    for _ in range(breaker.MIN_CALLS):
        breaker.record(channel, ok=False, now=now)
    from app.adapters.redis_conn import get_redis

    get_redis().delete(f"payrouter:breaker:{channel}:open")  # the cool-down is over
    assert breaker.allow(channel, now=now) is True  # the probe
    assert breaker.allow(channel, now=now) is False  # only one at a time
    breaker.record(channel, ok=True, now=now)
    assert breaker.state(channel) == "closed" and breaker.allow(channel, now=now)


def test_simulate_has_no_side_effect(stack):
    api = builders.api(stack.client)
    body = builders.payment_body(250_000)
    decision = api.post("/v1/routing/simulate", body).get_json()
    assert decision == {
        "object": "routing_decision", "outcome": "route", "channel": "acq_alpha",
        "candidates": ["acq_alpha", "acq_beta"], "dropped": [], "matched_rules": ["big-usd-cards"],
        "fee": 7280, "limits": decision["limits"], "ruleset_version": 1}
    assert decision["limits"]["max_amount"]["max"] == 5_000_000
    assert api.get("/v1/payments").get_json()["data"] == []
    declined = api.post("/v1/routing/simulate", {**body, "customer": {"id": "x", "country": "IR"}}).get_json()
    assert declined["outcome"] == "decline" and declined["decline_code"] == "country_blocked"


def test_read_only_mode_refuses_every_write_but_reads_work(client):
    api = builders.api(client)
    account = api.account(funded=100)
    other = api.account()
    switches.set("read_only", True, actor="ops", reason="migration")
    for path, body in (("/v1/accounts", {"currency": "USD", "customer": {"id": "c"}}),
                       ("/v1/transfers", api.transfer_body(account["id"], other["id"], 10))):
        response = api.post(path, body)
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "read_only"
    assert api.get(f"/v1/accounts/{account['id']}").status_code == 200
    switches.set("read_only", False, actor="ops")
    switches.set("operation:transfer", True, actor="ops")
    response = api.post("/v1/transfers", api.transfer_body(account["id"], other["id"], 10))
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "operation_paused"


def test_read_only_mode_refuses_actions_whose_body_may_be_left_out(wh_client):
    api = builders.api(wh_client)
    endpoint = api.post("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/hooks", "enabled_events": ["*"]})
    assert endpoint.status_code == 201, endpoint.get_json()
    key_id = api.get("/v1/api_keys").get_json()["data"][0]["id"]
    switches.set("read_only", True, actor="ops", reason="migration")
    for path, body in ((f"/v1/webhook_endpoints/{endpoint.get_json()['id']}/rotate_secret", None),
                       (f"/v1/webhook_endpoints/{endpoint.get_json()['id']}/rotate_secret", {"overlap_seconds": 60}),
                       ("/v1/events/evt_none/redeliver", None),
                       (f"/v1/api_keys/{key_id}/roll", None),
                       (f"/v1/api_keys/{key_id}/revoke", {})):
        response = api.post(path, body)
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "read_only", path
    switches.set("read_only", False, actor="ops")
    assert len(api.get("/v1/api_keys").get_json()["data"]) == 1  # nothing rolled
    rotated = api.post(f"/v1/webhook_endpoints/{endpoint.get_json()['id']}/rotate_secret", None)
    assert rotated.status_code == 200 and rotated.get_json()["secret"] != endpoint.get_json()["secret"]
