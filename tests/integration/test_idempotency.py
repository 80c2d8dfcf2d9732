"""Idempotency-Key semantics on one process (the parallel cases live in test_concurrency_pg)."""
from datetime import timedelta

from sqlalchemy import func, select, update

from app.adapters.db import unit_of_work
from app.adapters.models import IdempotencyKey, Transfer, utcnow
from app.services import idempotency
from tests import builders
from tests.support import wait_until


def n_transfers():
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Transfer))


def test_same_key_same_body_replays_byte_for_byte(client):
    api = builders.api(client)
    a, b = api.account(funded=500), api.account()
    body = api.transfer_body(a["id"], b["id"], 100)
    first = api.post("/v1/transfers", body, key="k1")
    second = api.post("/v1/transfers", body, key="k1")
    assert first.status_code == second.status_code == 201
    assert first.get_data() == second.get_data()
    assert "Idempotent-Replayed" not in first.headers and second.headers["Idempotent-Replayed"] == "true"
    assert n_transfers() == 1
    assert api.get(f"/v1/accounts/{a['id']}").get_json()["balance"]["available"] == 400


def test_same_key_other_body_is_422(client):
    api = builders.api(client)
    a, b = api.account(funded=500), api.account()
    body = api.transfer_body(a["id"], b["id"], 100)
    assert api.post("/v1/transfers", body, key="k1").status_code == 201
    response = api.post("/v1/transfers", {**body, "amount": 101}, key="k1")
    assert response.status_code == 422
    assert response.get_json()["error"]["type"] == "idempotency_error"
    assert n_transfers() == 1


def test_keys_are_scoped_per_merchant(client):
    one, two = builders.api(client, "One"), builders.api(client, "Two")
    assert one.post("/v1/accounts", {"currency": "USD", "customer": {"id": "c"}}, key="shared").status_code == 201
    assert two.post("/v1/accounts", {"currency": "EUR", "customer": {"id": "c"}}, key="shared").status_code == 201


def test_declines_are_stored_and_replayed(client):
    api = builders.api(client)
    a, b = api.account(funded=50), api.account()
    body = api.transfer_body(a["id"], b["id"], 100)
    first = api.post("/v1/transfers", body, key="k-decline")
    assert first.status_code == 402
    builders.fund(api.merchant_id, a["id"], 100)  # even with money now, the key's outcome stands
    second = api.post("/v1/transfers", body, key="k-decline")
    assert second.status_code == 402 and second.get_data() == first.get_data()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert n_transfers() == 0


ACCOUNT_BODY = {"currency": "USD", "customer": {"id": "c"}}


def claim_in_flight(merchant_id: str, key: str, lease: timedelta) -> None:
    """A claim of POST /v1/accounts with ACCOUNT_BODY left in flight by another request, its lease
    running out ``lease`` from now (negative: already run out)."""
    now = utcnow()
    with unit_of_work() as session:
        session.add(IdempotencyKey(merchant_id=merchant_id, key=key, endpoint="/v1/accounts",
                                   request_hash=idempotency.request_hash("/v1/accounts", ACCOUNT_BODY),
                                   status="in_flight", created_at=now, locked_until=now + lease,
                                   expires_at=now + timedelta(hours=24)))


def test_in_flight_key_answers_409(client, monkeypatch):
    api = builders.api(client)
    claim_in_flight(api.merchant_id, "busy", timedelta(seconds=60))
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.3)
    response = api.post("/v1/accounts", ACCOUNT_BODY, key="busy")
    assert response.status_code == 409
    assert response.get_json()["error"]["type"] == "idempotency_error"


def test_stale_claim_of_a_dead_request_is_taken_over(client):
    api = builders.api(client)
    claim_in_flight(api.merchant_id, "orphan", timedelta(seconds=-1))
    response = api.post("/v1/accounts", ACCOUNT_BODY, key="orphan")
    assert response.status_code == 201
    assert api.post("/v1/accounts", ACCOUNT_BODY, key="orphan").get_data() == response.get_data()


def test_keys_are_kept_a_day_then_purged(client):
    api = builders.api(client)
    api.post("/v1/accounts", {"currency": "USD", "customer": {"id": "c"}}, key="old")
    with unit_of_work() as session:
        row = session.get(IdempotencyKey, (api.merchant_id, "old"))
        assert row.expires_at - row.created_at >= timedelta(hours=24)
    assert idempotency.purge_expired() == 0
    with unit_of_work() as session:
        session.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert idempotency.purge_expired() == 1


def test_a_running_request_keeps_its_claim_past_the_lease(stack, monkeypatch):
    """The owner's process renews the lease while its channel call runs longer than the lease: a
    retry meanwhile waits and gets 409, never takes the claim over; afterwards it gets the replay."""
    import threading
    import time

    from app.adapters.channels_runtime import channel

    monkeypatch.setattr(idempotency, "LEASE", timedelta(seconds=1))
    monkeypatch.setattr(idempotency, "RENEW_SECONDS", 0.3)
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.3)
    sandbox = channel("sandbox")
    real_charge, calls = sandbox.charge, []

    def slow_charge(request):
        calls.append(request)
        time.sleep(2.5)  # two and a half leases
        return real_charge(request)

    monkeypatch.setattr(sandbox, "charge", slow_charge)
    api = builders.api(stack.client)
    body, first = builders.payment_body(5000), {}
    owner = threading.Thread(target=lambda: first.update(r=api.post("/v1/payments", body, key="long")))
    owner.start()
    wait_until(lambda: calls, timeout=10, what="the owner's charge")  # the key is claimed by then
    retries = []
    while owner.is_alive():
        retries.append(api.post("/v1/payments", body, key="long"))
        time.sleep(0.2)
    owner.join()
    assert first["r"].status_code == 201 and len(calls) == 1
    # A retry while the claim is held waits and gets 409. One sent in the instant between the owner
    # storing its answer and its thread returning gets that answer, replayed: never a second charge.
    held = [r for r in retries if r.status_code == 409]
    assert len(held) >= 2, [r.status_code for r in retries]  # 2.5 s of charge, a retry every ~0.5 s
    assert all(r.get_data() == first["r"].get_data() for r in retries if r.status_code != 409)
    assert api.post("/v1/payments", body, key="long").get_data() == first["r"].get_data()
