"""A claim becomes visible to other requests only with its first part-way commit (a payment's,
before the channel call). If the work before that commit took longer than the lease, the claim
appeared already expired: a retry waiting on it took it over at once and answered with the
operation as it was then (processing), while its owner went on to the channel and stored
another answer; the key then replayed bytes the retry had never been given."""
import threading
import time
from datetime import timedelta

import pytest
import requests

from app.services import idempotency, routing
from tests import builders

pytestmark = pytest.mark.postgres


def test_a_claim_is_never_visible_with_a_lease_already_run_out(stack, monkeypatch):
    monkeypatch.setattr(idempotency, "LEASE", timedelta(seconds=1))
    monkeypatch.setattr(idempotency, "RENEW_SECONDS", 0.3)
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 10.0)
    real_decide, slowed = routing.decide, threading.Event()

    def slow_decide(*args, **kwargs):  # the owner's work before its first commit outlasts the lease
        if not slowed.is_set():
            slowed.set()
            time.sleep(1.6)
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(routing, "decide", slow_decide)
    api = builders.api(stack.client)
    body = builders.payment_body(5000)  # succeeds at once at the channel
    headers = {"Authorization": f"Bearer {api.secret}", "Idempotency-Key": "slow-start"}
    post = lambda: requests.post(f"{stack.api_url}/v1/payments", json=body, headers=headers, timeout=60)  # noqa: E731
    answers = {}
    owner = threading.Thread(target=lambda: answers.update(owner=post()))
    owner.start()
    assert slowed.wait(5)
    time.sleep(0.2)
    retry = post()  # waits on the owner's uncommitted claim, then finds it
    owner.join()
    assert answers["owner"].status_code == 201 and answers["owner"].json()["status"] == "succeeded"
    assert retry.status_code in (201, 409), retry.text
    if retry.status_code == 201:  # a replay of the owner's answer, never an answer of its own
        assert retry.content == answers["owner"].content, (retry.json()["status"], answers["owner"].json()["status"])
    assert post().content == answers["owner"].content
    payment = api.get(f"/v1/payments/{answers['owner'].json()['id']}").get_json()
    assert len(payment["attempts"]) == 1
