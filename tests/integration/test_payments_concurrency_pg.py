"""Parallel refunds and withdrawals against PostgreSQL: never above what was paid, never overdrawn."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests import builders

pytestmark = pytest.mark.postgres


def _post(stack, api, path, body, key):
    return requests.post(f"{stack.api_url}{path}", json=body, timeout=60,
                         headers={"Authorization": f"Bearer {api.secret}", "Idempotency-Key": key})


def test_parallel_refunds_never_exceed_the_payment(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(10_000)).get_json()
    barrier = threading.Barrier(20)

    def refund(i):
        barrier.wait()
        return _post(stack, api, "/v1/refunds", {"payment": payment["id"], "amount": 700, "reference": f"r{i}"},
                     f"rk{i}")

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(refund, range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 14 and codes.count(422) == 6, codes  # 14 × 700 = 9,800 ≤ 10,000 < 15 × 700
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["amount_refunded"] == 9_800


def test_parallel_withdrawals_never_overdraw(stack):
    api = builders.api(stack.client)
    account = api.account(funded=5_000)
    destination = {"type": "bank_account", "country": "US", "last4": "0001"}
    barrier = threading.Barrier(20)

    def withdraw(i):
        barrier.wait()
        return _post(stack, api, "/v1/withdrawals", {"account": account["id"], "amount": 1_000, "currency": "USD",
                                                      "destination": destination, "reference": f"w{i}"}, f"wk{i}")

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(withdraw, range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 5 and codes.count(402) == 15, codes
    assert api.get(f"/v1/accounts/{account['id']}").get_json()["balance"] == {"available": 0, "pending": 0}


def test_parallel_identical_payments_charge_once(stack):
    """The claim commits part-way (before the channel call): the others wait for it, then replay."""
    api = builders.api(stack.client)
    body = builders.payment_body(2052)  # processing: the channel call answers, the callback comes later
    barrier = threading.Barrier(12)

    def pay(_):
        barrier.wait()
        return _post(stack, api, "/v1/payments", body, "one-key")

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(pay, range(12)))
    ok = [r for r in responses if r.status_code == 201]
    assert all(r.status_code in (201, 409) for r in responses), [r.status_code for r in responses]
    assert ok and len({r.content for r in ok}) == 1
    payment_id = ok[0].json()["id"]
    assert len(api.get("/v1/payments").get_json()["data"]) == 1
    assert len(api.get(f"/v1/payments/{payment_id}").get_json()["attempts"]) == 1  # one call to the channel
