"""Authorize now, capture later (contract §1, §4): capture_method manual, capture in full or in part,
cancel, expiry, and capture racing cancel, through the public API with the sandbox over HTTP."""
import datetime as dt
import threading

import pytest
import requests
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import Attempt, ChannelCallback, Event, JournalEntry, LedgerLine, Operation
from tests import builders
from tests.support import wait_until


def ledger_lines(object_id: str) -> list[int]:
    with unit_of_work() as session:
        return sorted(session.scalars(select(LedgerLine.amount)
                                      .join(JournalEntry, JournalEntry.id == LedgerLine.entry_id)
                                      .where(JournalEntry.source_id == object_id)))


def events_of(object_id: str) -> list[str]:
    with unit_of_work() as session:
        return list(session.scalars(select(Event.type).where(Event.object_id == object_id).order_by(Event.created_at,
                                                                                                   Event.id)))


def fee_of(amount: int) -> int:
    """The default rules' fee: 3.0 %, rounded half-up."""
    return amount * 3 // 100 + (1 if amount * 3 % 100 >= 50 else 0)


def authorize(api, amount: int = 2000, **fields) -> dict:
    response = api.post("/v1/payments", builders.payment_body(amount, capture_method="manual", **fields))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_manual_capture_stops_at_requires_capture_and_moves_nothing(stack):
    api = builders.api(stack.client)
    payment = authorize(api, 2000)
    assert payment["status"] == "requires_capture"
    assert payment["capture_method"] == "manual" and payment["amount_captured"] == 0
    assert payment["capture_before"] > dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert payment["attempts"] == [{"channel": "sandbox", "status": "requires_capture"}]
    assert ledger_lines(payment["id"]) == []  # authorize moves nothing
    assert events_of(payment["id"]) == ["payment.requires_capture"]
    automatic = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    assert automatic["capture_method"] == "automatic" and automatic["amount_captured"] == 2000


def test_full_capture_posts_the_payment_and_is_idempotent(stack):
    api = builders.api(stack.client)
    payment = authorize(api, 2000)
    response = api.post(f"/v1/payments/{payment['id']}/capture", {}, key="cap-1")
    assert response.status_code == 200, response.get_json()
    captured = response.get_json()
    assert captured["status"] == "succeeded" and captured["amount_captured"] == 2000
    assert captured["fee"] == fee_of(2000)
    assert captured["attempts"] == [{"channel": "sandbox", "status": "succeeded"}]
    assert ledger_lines(payment["id"]) == sorted([-2000, 2000 - fee_of(2000), fee_of(2000)])
    assert events_of(payment["id"]) == ["payment.requires_capture", "payment.succeeded"]
    replay = api.post(f"/v1/payments/{payment['id']}/capture", {}, key="cap-1")
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.data == response.data
    again = api.post(f"/v1/payments/{payment['id']}/capture", {})
    assert again.status_code == 409
    assert again.get_json()["error"]["type"] == "invalid_request_error"
    assert again.get_json()["error"]["code"] == "payment_not_capturable"
    assert ledger_lines(payment["id"]) == sorted([-2000, 2000 - fee_of(2000), fee_of(2000)])  # nothing twice


def test_partial_capture_posts_what_was_captured_and_bounds_refunds(stack):
    api = builders.api(stack.client)
    payment = authorize(api, 10000)
    captured = api.post(f"/v1/payments/{payment['id']}/capture", {"amount": 6000}).get_json()
    assert captured["status"] == "succeeded"
    assert captured["amount"] == 10000 and captured["amount_captured"] == 6000
    assert captured["fee"] == fee_of(6000)  # the fee on the captured amount
    assert ledger_lines(payment["id"]) == sorted([-6000, 6000 - fee_of(6000), fee_of(6000)])
    too_much = api.post("/v1/refunds", {"payment": payment["id"], "amount": 6001, "reference": builders.unique("re")})
    assert too_much.status_code == 422 and too_much.get_json()["error"]["code"] == "refund_exceeds_payment"
    refund = api.post("/v1/refunds", {"payment": payment["id"], "reference": builders.unique("re")})
    assert refund.status_code == 201, refund.get_json()
    assert refund.get_json()["amount"] == 6000 and refund.get_json()["status"] == "succeeded"


@pytest.mark.parametrize("body,status,code,param", [
    ({"amount": 2001}, 422, "amount_too_large", "amount"),
    ({"amount": 0}, 400, "parameter_invalid", "amount"),
    ({"amount": "10"}, 400, "parameter_invalid", "amount"),
    ({"amount": 10, "tip": 1}, 400, "parameter_unknown", "tip"),
])
def test_bad_captures_are_refused_and_change_nothing(stack, body, status, code, param):
    api = builders.api(stack.client)
    payment = authorize(api, 2000)
    response = api.post(f"/v1/payments/{payment['id']}/capture", body)
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["code"] == code or status == 400
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "requires_capture"


def test_capture_and_cancel_of_what_cannot_be_are_409(stack):
    api = builders.api(stack.client)
    paid = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    for action, code in (("capture", "payment_not_capturable"), ("cancel", "payment_not_cancelable")):
        response = api.post(f"/v1/payments/{paid['id']}/{action}", {})
        assert response.status_code == 409, response.get_json()
        assert response.get_json()["error"] | {"message": "", "request_id": ""} == {
            "type": "invalid_request_error", "code": code, "message": "", "request_id": ""}
    assert api.post("/v1/payments/pay_nope/capture", {}).status_code == 404


def test_cancel_voids_the_authorization(stack):
    api = builders.api(stack.client)
    payment = authorize(api, 2000)
    response = api.post(f"/v1/payments/{payment['id']}/cancel", {"reason": "duplicate"})
    assert response.status_code == 200, response.get_json()
    canceled = response.get_json()
    assert canceled["status"] == "canceled" and canceled["fee"] == 0 and canceled["amount_captured"] == 0
    assert canceled["cancellation_reason"] == "duplicate"
    assert canceled["attempts"] == [{"channel": "sandbox", "status": "canceled"}]
    assert ledger_lines(payment["id"]) == []  # void posts nothing
    assert events_of(payment["id"]) == ["payment.requires_capture", "payment.canceled"]
    late = api.post(f"/v1/payments/{payment['id']}/capture", {})
    assert late.status_code == 409 and late.get_json()["error"]["code"] == "payment_not_capturable"
    assert api.post(f"/v1/payments/{payment['id']}/cancel", {}).status_code == 409


def test_balance_payments_cannot_be_captured_later(stack):
    api = builders.api(stack.client)
    account = api.account(funded=5000)
    body = builders.payment_body(1000, capture_method="manual",
                                 payment_method={"type": "balance", "account": account["id"]})
    response = api.post("/v1/payments", body)
    assert response.status_code == 400 and response.get_json()["error"]["param"] == "capture_method"


def test_an_uncaptured_authorization_expires_at_the_channel(stack):
    stack.sandbox.psp.store.auth_expiry = dt.timedelta(seconds=1)  # SANDBOX_AUTH_EXPIRY_S=1
    api = builders.api(stack.client)
    payment = authorize(api, 2000)

    def canceled():
        stack.work()  # the sandbox's canceled callback, drained
        return api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "canceled"

    wait_until(canceled, timeout=15, what="the expired authorization canceled")
    assert ledger_lines(payment["id"]) == []
    assert events_of(payment["id"]) == ["payment.requires_capture", "payment.canceled"]
    late = api.post(f"/v1/payments/{payment['id']}/capture", {})
    assert late.status_code == 409


def test_an_expiry_whose_callback_is_lost_is_learned_by_status_query(stack):
    stack.sandbox.psp.store.auth_expiry = dt.timedelta(seconds=1)
    stack.sandbox.psp.sender.stopped.set()  # no callback leaves the sandbox
    api = builders.api(stack.client)
    payment = authorize(api, 2000)

    def canceled():
        stack.work()  # the status query due at capture_before
        return api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "canceled"

    wait_until(canceled, timeout=15, what="the expiry learned by status query")
    assert events_of(payment["id"]) == ["payment.requires_capture", "payment.canceled"]


def test_a_callback_authorization_52_is_captured(stack):
    api = builders.api(stack.client)
    payment = authorize(api, 2052)
    assert payment["status"] == "processing"
    payment = stack.settle(api, f"/v1/payments/{payment['id']}", want=("requires_capture",))
    assert payment["status"] == "requires_capture"
    captured = api.post(f"/v1/payments/{payment['id']}/capture", {"amount": 1000}).get_json()
    assert captured["status"] == "succeeded" and captured["amount_captured"] == 1000


def test_capture_racing_cancel_exactly_one_wins(stack):
    """Threads over real HTTP: for each authorization a capture and a cancel at once; exactly one
    answers 200, the other 409, and the payment, its ledger and its events say the same."""
    api = builders.api(stack.client)
    session = requests.Session()
    outcomes = []
    for _ in range(6):
        payment = authorize(api, 3000)
        answers: dict[str, requests.Response] = {}
        barrier = threading.Barrier(2)

        def hit(action: str, pid=payment["id"], answers=answers, barrier=barrier):
            barrier.wait()
            answers[action] = session.post(f"{stack.api_url}/v1/payments/{pid}/{action}", json={},
                                           headers=api.headers(builders.unique("race")), timeout=30)

        threads = [threading.Thread(target=hit, args=(action,)) for action in ("capture", "cancel")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(r.status_code for r in answers.values())
        assert statuses == [200, 409], {a: (r.status_code, r.text) for a, r in answers.items()}
        winner = next(action for action, r in answers.items() if r.status_code == 200)
        final = api.get(f"/v1/payments/{payment['id']}").get_json()
        expected = "succeeded" if winner == "capture" else "canceled"
        assert final["status"] == expected
        assert stack.sandbox.psp.store.by_reference("sandbox", payment["id"]).status == expected  # the channel agrees
        assert answers[winner].json()["status"] == expected
        loser = answers["cancel" if winner == "capture" else "capture"].json()["error"]
        assert loser["code"] in ("payment_not_capturable", "payment_not_cancelable")
        assert ledger_lines(payment["id"]) == ([] if expected == "canceled" else
                                               sorted([-3000, 3000 - fee_of(3000), fee_of(3000)]))
        assert events_of(payment["id"]) == ["payment.requires_capture", f"payment.{expected}"]
        outcomes.append(winner)
    assert len(outcomes) == 6


def test_captures_voids_and_open_authorizations_reconcile_clean(stack):
    """The statement lists a capture (of the captured amount) and a void; an authorization still
    open is on neither side: reconciliation of the day finds nothing."""
    import json

    from click.testing import CliRunner

    from app.entrypoints.cli import main

    api = builders.api(stack.client)
    partial = authorize(api, 10000)
    api.post(f"/v1/payments/{partial['id']}/capture", {"amount": 2500})
    full = authorize(api, 4000)
    api.post(f"/v1/payments/{full['id']}/capture", {})
    voided = authorize(api, 3000)
    api.post(f"/v1/payments/{voided['id']}/cancel", {})
    authorize(api, 2000)  # left open
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    result = CliRunner().invoke(main, ["reconcile", "--channel", "sandbox", "--date", today, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["issues"] == [] and report["statement_lines"] == 3 and report["matched"] == 3


def no_transaction_open() -> bool:
    """No session holds a transaction: on SQLite the write lock is free at once, on PostgreSQL no
    backend of this database is idle in a transaction."""
    import sqlite3

    from app.adapters.db import get_engine

    engine = get_engine()
    if engine.dialect.name == "sqlite":
        probe = sqlite3.connect(engine.url.database, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")  # refused at once while another writer holds the lock
            probe.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            probe.close()
    with engine.connect() as connection:
        return connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state IN ('idle in transaction', 'idle in transaction (aborted)')").scalar() == 0


@pytest.mark.parametrize("action", ["capture", "cancel"])
def test_no_transaction_is_held_while_the_channel_is_asked(stack, monkeypatch, action):
    """The capture or void call to the channel holds no transaction (on SQLite that would be the
    write lock, held for as long as the channel takes to answer)."""
    from channels.sandbox.adapter import SandboxChannel

    api = builders.api(stack.client)
    payment = authorize(api, 2000)
    verb = "capture" if action == "capture" else "void"
    free, real = [], getattr(SandboxChannel, verb)

    def asked(self, request):
        free.append(no_transaction_open())
        return real(self, request)

    monkeypatch.setattr(SandboxChannel, verb, asked)
    response = api.post(f"/v1/payments/{payment['id']}/{action}", {})
    assert response.status_code == 200, response.get_json()
    assert free == [True]


def test_capture_and_cancel_on_a_channel_this_process_does_not_run_are_402_no_route(stack, tmp_path):
    """Attack a14 M2: the payment's channel is not run by this process (not built here): capture and
    cancel answer 402 ``no_route`` with the decision, as a refund does, never a 500; nothing is
    written or sent. The channel back, a capture goes through."""
    from tests.integration.conftest import run_without

    api = builders.api(stack.client)
    payment = authorize(api)
    with unit_of_work() as session:
        before = session.get(Operation, payment["id"])
        before = (before.status, before.version, before.next_query_at, before.amount_captured)
    sandbox_back = run_without(stack, tmp_path, "sandbox")
    for action, body in (("capture", {"amount": 600}), ("cancel", {})):
        answer = api.post(f"/v1/payments/{payment['id']}/{action}", body)
        error = answer.get_json()["error"]
        assert (answer.status_code, error["code"]) == (402, "no_route"), answer.get_json()
        assert error["decision"]["dropped"] == [{"channel": "sandbox", "reason": "unknown_channel"}]
        assert f"channel sandbox cannot {'void' if action == 'cancel' else action}" in error["message"]
    with unit_of_work() as session:
        after = session.get(Operation, payment["id"])
        assert (after.status, after.version, after.next_query_at, after.amount_captured) == before
    sandbox_back()
    captured = api.post(f"/v1/payments/{payment['id']}/capture", {"amount": 600})
    assert captured.status_code == 200 and captured.get_json()["amount_captured"] == 600, captured.get_json()


def test_a_callback_for_a_stored_channel_this_process_does_not_run_is_503_to_be_sent_again(stack, tmp_path):
    """Attack a14: a callback reaching a process that could not build its (stored) channel was a 404,
    which a PSP takes as final. It is a 503 ``channel_not_running`` with Retry-After; nothing is
    stored; an unknown channel stays 404; the channel back, the same callback is taken."""
    from tests.integration.conftest import run_without

    api = builders.api(stack.client)
    payment = authorize(api)
    with unit_of_work() as session:
        attempt = session.scalars(select(Attempt).where(Attempt.operation_id == payment["id"])).one()
    from app.adapters.channels_runtime import channel

    body, headers = builders.signed_callback(channel("sandbox"), payment["id"], "succeeded", attempt.channel_reference)
    sandbox_back = run_without(stack, tmp_path, "sandbox")
    answer = stack.client.post("/callbacks/sandbox", data=body, headers=headers)
    assert answer.status_code == 503 and answer.headers["Retry-After"], answer.get_json()
    assert answer.get_json()["error"]["code"] == "channel_not_running"
    assert stack.client.post("/callbacks/nosuch", data=body, headers=headers).status_code == 404
    with unit_of_work() as session:
        assert session.query(ChannelCallback).count() == 0
    sandbox_back()
    assert stack.client.post("/callbacks/sandbox", data=body, headers=headers).status_code == 200
