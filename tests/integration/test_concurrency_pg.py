"""Races over real HTTP against gunicorn on PostgreSQL: idempotency and overdraft safety."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from app.adapters.db import unit_of_work
from app.adapters.models import Account, Transfer
from tests import builders
from tests.live import api_server

pytestmark = pytest.mark.postgres


@pytest.fixture
def live(clean):
    with api_server(clean, workers=2, threads=32) as base:
        yield base


def _headers(secret, key):
    return {"Authorization": f"Bearer {secret}", "Idempotency-Key": key}


def test_50_parallel_posts_with_one_key_make_one_transfer(live, client):
    api = builders.api(client)
    a, b = api.account(funded=10_000), api.account()
    body = api.transfer_body(a["id"], b["id"], 100)
    barrier = threading.Barrier(50)

    def call(_):
        barrier.wait()
        return requests.post(f"{live}/v1/transfers", json=body, headers=_headers(api.secret, "same-key"), timeout=60)

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(call, range(50)))
    ok = [r for r in responses if r.status_code == 201]
    assert all(r.status_code in (201, 409) for r in responses), {r.status_code for r in responses}
    assert ok and len({r.json()["id"] for r in ok}) == 1
    assert len({r.content for r in ok}) == 1
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Transfer)) == 1
        assert session.get(Account, a["id"]).available == 9_900


def test_40_parallel_transfers_of_100_from_1000_exactly_10_succeed(live, client):
    api = builders.api(client)
    a, b = api.account(funded=1_000), api.account()
    barrier = threading.Barrier(40)
    seen_balances, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            with unit_of_work() as session:
                seen_balances.append(session.get(Account, a["id"]).available)

    def call(i):
        barrier.wait()
        return requests.post(f"{live}/v1/transfers", json=api.transfer_body(a["id"], b["id"], 100),
                             headers=_headers(api.secret, f"k-{i}"), timeout=60)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(40) as pool:
            responses = list(pool.map(call, range(40)))
    finally:
        stop.set()
        watcher.join()
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 10 and codes.count(402) == 30, codes
    assert all(r.json()["error"]["code"] == "insufficient_funds" for r in responses if r.status_code == 402)
    assert seen_balances and min(seen_balances) >= 0
    with unit_of_work() as session:
        assert session.get(Account, a["id"]).available == 0
        assert session.get(Account, b["id"]).available == 1_000


def test_opposite_transfers_do_not_deadlock(live, client):
    api = builders.api(client)
    a, b = api.account(funded=5_000), api.account(funded=5_000)

    def call(i):
        src, dst = (a, b) if i % 2 else (b, a)
        return requests.post(f"{live}/v1/transfers", json=api.transfer_body(src["id"], dst["id"], 10),
                             headers=_headers(api.secret, f"x-{i}"), timeout=60)

    with ThreadPoolExecutor(20) as pool:
        codes = [r.status_code for r in pool.map(call, range(60))]
    assert codes == [201] * 60
    with unit_of_work() as session:
        assert session.get(Account, a["id"]).available + session.get(Account, b["id"]).available == 10_000


def test_database_refuses_an_unbalanced_entry(clean):
    from sqlalchemy.exc import IntegrityError

    from app.adapters.models import JournalEntry, LedgerLine, new_id

    builders.bare_system_account("mer_x", "acct_x")
    with pytest.raises(IntegrityError):
        with unit_of_work() as session:
            session.add(JournalEntry(id="je_x", merchant_id="mer_x", kind="bad"))
            session.flush()
            session.add(LedgerLine(id=new_id("ln"), entry_id="je_x", account_id="acct_x", balance_type="available",
                                   amount=5, currency="USD"))
