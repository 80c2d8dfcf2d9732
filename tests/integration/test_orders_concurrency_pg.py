"""Payments racing for one order on PostgreSQL: only what fits the order is let through to a channel."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from app.adapters.db import unit_of_work
from app.adapters.models import Event
from tests import builders

pytestmark = pytest.mark.postgres


def test_concurrent_payments_on_one_order_never_pay_it_beyond_its_amount(stack):
    api = builders.api(stack.client)
    order = api.post("/v1/orders", {"amount": 7_000, "currency": "USD", "reference": "order-1"}).get_json()
    barrier = threading.Barrier(20)

    def pay(i):
        barrier.wait()
        body = builders.payment_body(700, order=order["id"], reference=f"p{i}")
        return requests.post(f"{stack.api_url}/v1/payments", json=body, timeout=60,
                             headers={"Authorization": f"Bearer {api.secret}", "Idempotency-Key": f"pk{i}"})

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(pay, range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 10 and codes.count(409) == 10, codes  # 10 × 700 = 7,000
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"order_amount_exceeded"}
    assert all(r.json()["status"] == "succeeded" for r in responses if r.status_code == 201)
    seen = api.get(f"/v1/orders/{order['id']}").get_json()
    assert (seen["status"], seen["amount_paid"], len(seen["payments"])) == ("paid", 7_000, 10)
    assert sorted(seen["payments"]) == sorted(r.json()["id"] for r in responses if r.status_code == 201)
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Event).where(
            Event.object_id == order["id"], Event.type == "order.paid")) == 1
