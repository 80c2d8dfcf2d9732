"""The traffic of bench/load/run.py: one merchant's mixed load at a fixed arrival rate.

Each simulated client sends LOAD_RATE_PER_USER requests per second (locust's constant_throughput),
picking what to send by weight: payments of every sandbox outcome (the last two digits of the
amount choose it: contract §4), refunds of its own succeeded payments, top-ups, withdrawals,
transfers between the merchant's accounts, lists and retrievals. Callbacks (…52, …53, …56) and
webhooks follow from them. Every answer is checked against what that request should get: any
other status counts as a failure in locust's report.

Set by run.py: LOAD_SECRET (the merchant's key), LOAD_ACCOUNTS (comma-separated funded account
ids), LOAD_RATE_PER_USER.
"""
from __future__ import annotations

import os
import random
import uuid

from locust import HttpUser, constant_throughput, task

SECRET = os.environ.get("LOAD_SECRET", "")
ACCOUNTS = [a for a in os.environ.get("LOAD_ACCOUNTS", "").split(",") if a]
RATE = float(os.environ.get("LOAD_RATE_PER_USER", "1"))
CARD = {"type": "card", "brand": "visa", "country": "US", "last4": "4242"}
DEST = {"type": "bank_account", "country": "US", "last4": "1234"}


class Merchant(HttpUser):
    wait_time = constant_throughput(RATE)

    def on_start(self) -> None:
        self.paid: list[str] = []  # this client's succeeded payments, for refunds and retrievals

    def _post(self, path: str, body: dict, name: str, expect: tuple[int, ...] = (201,)) -> dict | None:
        body = {**body, "reference": uuid.uuid4().hex} if "reference" not in body else body
        with self.client.post(path, json=body, name=name, catch_response=True,
                              headers={"Authorization": f"Bearer {SECRET}", "Idempotency-Key": uuid.uuid4().hex}
                              ) as answer:
            if answer.status_code not in expect:
                answer.failure(f"{answer.status_code}: {answer.text[:200]}")
                return None
            answer.success()
            return answer.json()

    def _get(self, path: str, name: str) -> None:
        with self.client.get(path, name=name, catch_response=True,
                             headers={"Authorization": f"Bearer {SECRET}"}) as answer:
            if answer.status_code != 200:
                answer.failure(f"{answer.status_code}: {answer.text[:200]}")
            else:
                answer.success()

    def _payment(self, tail: int, name: str) -> None:
        amount = random.randint(10, 900) * 100 + tail
        made = self._post("/v1/payments", {"amount": amount, "currency": "USD", "payment_method": CARD,
                                           "customer": {"id": f"cus_{random.randint(1, 500)}", "country": "US"}},
                          name)
        if made and made["status"] == "succeeded" and len(self.paid) < 200:
            self.paid.append(made["id"])

    @task(40)
    def payment_succeeds(self) -> None:
        self._payment(random.choice([0, 10, 25, 49]), "POST /v1/payments (succeeds)")

    @task(5)
    def payment_declined(self) -> None:
        self._payment(51, "POST /v1/payments (…51 declined)")

    @task(5)
    def payment_async_success(self) -> None:
        self._payment(52, "POST /v1/payments (…52 callback succeeds)")

    @task(3)
    def payment_async_failure(self) -> None:
        self._payment(53, "POST /v1/payments (…53 callback fails)")

    @task(1)
    def payment_hangs(self) -> None:
        self._payment(54, "POST /v1/payments (…54 channel times out)")

    @task(2)
    def payment_channel_error(self) -> None:
        self._payment(55, "POST /v1/payments (…55 HTTP 500, fails over)")

    @task(2)
    def payment_three_callbacks(self) -> None:
        self._payment(56, "POST /v1/payments (…56 three callbacks)")

    @task(6)
    def refund(self) -> None:
        if self.paid:
            payment = self.paid.pop(random.randrange(len(self.paid)))
            self._post("/v1/refunds", {"payment": payment, "amount": 100}, "POST /v1/refunds")

    @task(6)
    def topup(self) -> None:
        self._post("/v1/topups", {"account": random.choice(ACCOUNTS), "amount": random.randint(1, 50) * 100,
                                  "currency": "USD", "payment_method": CARD}, "POST /v1/topups")

    @task(3)
    def withdrawal(self) -> None:
        self._post("/v1/withdrawals", {"account": random.choice(ACCOUNTS), "amount": random.randint(1, 20) * 100,
                                       "currency": "USD", "destination": DEST}, "POST /v1/withdrawals")

    @task(6)
    def transfer(self) -> None:
        a, b = random.sample(ACCOUNTS, 2)
        self._post("/v1/transfers", {"from_account": a, "to_account": b, "amount": random.randint(1, 500),
                                     "currency": "USD"}, "POST /v1/transfers")

    @task(8)
    def retrieve_payment(self) -> None:
        if self.paid:
            self._get(f"/v1/payments/{random.choice(self.paid)}", "GET /v1/payments/{id}")

    @task(5)
    def list_payments(self) -> None:
        self._get("/v1/payments?limit=20", "GET /v1/payments")

    @task(2)
    def list_events(self) -> None:
        self._get("/v1/events?limit=20", "GET /v1/events")

    @task(3)
    def account(self) -> None:
        self._get(f"/v1/accounts/{random.choice(ACCOUNTS)}", "GET /v1/accounts/{id}")
