"""Merchant channel accounts (contract §4), through the public API with the sandbox over HTTP: a
merchant brings its own key at the sandbox (``POST /accounts``); its operations on that channel are
made with it (the sandbox files them under its account), another merchant's are not; the key is
never answered, logged or stored in clear; a key the sandbox did not issue is refused; statements
and reconciliation are per account."""
import csv
import datetime as dt
import io
import json
import logging
import threading
import time

import pytest
import urllib3
from click.testing import CliRunner
from sqlalchemy import event, select, update

from app.adapters import account_channels, notify
from app.adapters.db import get_engine, unit_of_work
from app.adapters.models import Attempt, ChannelAccount, Operation, utcnow
from app.entrypoints.cli import main
from tests import builders
from tests.support import database_text


def bring(api, api_key: str, channel: str = "sandbox", key: str | None = None, **fields):
    """``POST /v1/channel_accounts`` with the sandbox key ``api_key`` (``key``: the Idempotency-Key)."""
    return api.post("/v1/channel_accounts", {"channel": channel, "credentials": {"api_key": api_key}, **fields},
                    key=key)


def pay(api, amount: int = 2000, **fields) -> dict:
    response = api.post("/v1/payments", builders.payment_body(amount, **fields))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def channel_reference(operation_id: str) -> str:
    with unit_of_work() as session:
        return session.get(Operation, operation_id).channel_reference


def statement(stack, api_key: str | None = None, channel: str = "sandbox") -> dict[str, dict]:
    """The sandbox's statement of today over HTTP (with ``api_key``: that account's), by reference."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    answer = urllib3.request("GET", f"{stack.sandbox_url}/statements/{today}?channel={channel}", headers=headers)
    assert answer.status == 200, answer.data
    return {row["channel_reference"]: row for row in csv.DictReader(io.StringIO(answer.data.decode()))}


def sandbox_get(stack, path: str, authorization: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request("GET", f"{stack.sandbox_url}{path}", headers={"Authorization": authorization})


def test_an_account_is_stored_encrypted_used_for_its_merchant_and_never_shown(stack, caplog, json_log):
    caplog.set_level(logging.DEBUG)
    mine, theirs = builders.api(stack.client, "Mine"), builders.api(stack.client, "Theirs")
    key = builders.sandbox_account(stack.sandbox_url)["api_key"]
    answers = []

    created = bring(mine, key, metadata={"team": "payments"}, key="bring-my-key")
    assert created.status_code == 201, created.get_json()
    account = created.get_json()
    assert account["id"].startswith("mca_") and account["object"] == "channel_account"
    assert (account["channel"], account["credential_fields"], account["livemode"]) == ("sandbox", ["api_key"], False)
    replay = bring(mine, key, metadata={"team": "payments"}, key="bring-my-key")
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.data == created.data
    other_key = bring(mine, key + "x", metadata={"team": "payments"}, key="bring-my-key")
    assert other_key.status_code == 422  # the key is bound to the credentials too
    twice = bring(mine, builders.sandbox_account(stack.sandbox_url)["api_key"])
    assert twice.status_code == 409 and twice.get_json()["error"]["code"] == "channel_account_exists"
    listed = mine.get("/v1/channel_accounts?channel=sandbox")
    assert [a["id"] for a in listed.get_json()["data"]] == [account["id"]]
    assert mine.get("/v1/channel_accounts?channel=acq_alpha").get_json()["data"] == []
    retrieved = mine.get(f"/v1/channel_accounts/{account['id']}")
    assert retrieved.get_json() == account
    assert theirs.get(f"/v1/channel_accounts/{account['id']}").status_code == 404  # another merchant's
    assert theirs.get("/v1/channel_accounts").get_json()["data"] == []
    answers += [created, replay, other_key, twice, listed, retrieved]

    # That merchant's payment, refund, capture, late callback and status query go with its key ...
    paid = pay(mine)
    assert paid["status"] == "succeeded" and paid["attempts"] == [{"channel": "sandbox", "status": "succeeded"}]
    refund = mine.post("/v1/refunds", {"payment": paid["id"], "amount": 500, "reference": builders.unique("re")})
    assert refund.status_code == 201 and refund.get_json()["status"] == "succeeded", refund.get_json()
    held = pay(mine, 2100, capture_method="manual")
    assert held["status"] == "requires_capture"
    captured = mine.post(f"/v1/payments/{held['id']}/capture", {"amount": 1500})
    assert captured.status_code == 200 and captured.get_json()["status"] == "succeeded", captured.get_json()
    late = pay(mine, 2052)  # processing; the sandbox's signed callback settles it
    lost = pay(mine, 2054)  # no answer in time; a status query (with the merchant's key) settles it
    assert stack.settle(mine, f"/v1/payments/{late['id']}")["status"] == "succeeded"
    assert stack.settle(mine, f"/v1/payments/{lost['id']}")["status"] == "succeeded"
    # ... and another merchant's with the platform's.
    platform = pay(theirs)
    assert platform["status"] == "succeeded"
    answers += [refund, captured, mine.get(f"/v1/payments/{paid['id']}"), mine.get("/v1/payments"),
                mine.get("/v1/events")]

    at_account, at_platform = statement(stack, key), statement(stack)
    ours = {channel_reference(op["id"]) for op in (paid, late, lost)}
    assert ours <= set(at_account) and not ours & set(at_platform)
    assert channel_reference(platform["id"]) in at_platform and channel_reference(platform["id"]) not in at_account
    assert {row["operation"] for row in at_account.values()} >= {"payment", "refund", "capture"}
    with unit_of_work() as session:
        made_with = dict(session.execute(select(Attempt.operation_id, Attempt.channel_account_id)).all())
    assert made_with[paid["id"]] == made_with[refund.get_json()["id"]] == account["id"]
    assert made_with[platform["id"]] is None

    assert key not in database_text()
    with unit_of_work() as session:  # stored, encrypted
        assert session.get(ChannelAccount, account["id"]).credentials_encrypted
    for answer in answers:
        assert key not in answer.get_data(as_text=True)
    assert caplog.records and key not in caplog.text
    assert json_log.getvalue() and key not in json_log.getvalue()


def test_a_key_the_sandbox_no_longer_takes_fails_payments_and_nothing_fails_over(stack):
    """A key the sandbox took when it was brought and refuses now (revoked at the PSP): each
    payment with it fails ``channel_credentials_refused``, final, and the channel stays up."""
    mine, theirs = builders.api(stack.client, "Mine"), builders.api(stack.client, "Theirs")
    made_up = "sbxkey_" + "0" * 32
    builders.revoked_channel_account(mine.merchant_id, made_up)
    # 100000 USD by card routes to [acq_alpha, acq_beta]: the refusal on acq_alpha is final.
    builders.revoked_channel_account(mine.merchant_id, made_up, channel="acq_alpha")
    refused = pay(mine, 100_000)
    assert refused["status"] == "failed" and refused["failure_code"] == "channel_credentials_refused"
    assert refused["attempts"] == [{"channel": "acq_alpha", "status": "failed",
                                    "error_code": "channel_credentials_refused"}]
    for _ in range(6):  # one merchant's wrong key is not the channel down: its circuit stays closed
        assert pay(mine)["failure_code"] == "channel_credentials_refused"
    assert pay(theirs)["status"] == "succeeded"

    # At the sandbox: an account sees its own operations only; a key it never issued is refused.
    first, second = (builders.sandbox_account(stack.sandbox_url) for _ in range(2))
    other = builders.api(stack.client, "Other")
    assert bring(other, first["api_key"]).status_code == 201
    reference = channel_reference(pay(other)["id"])
    path = f"/v1/channels/sandbox/operations/{reference}"
    assert sandbox_get(stack, path, f"Bearer {first['api_key']}").status == 200
    assert sandbox_get(stack, path, f"Bearer {second['api_key']}").status == 404
    refused_key = sandbox_get(stack, path, f"Bearer {made_up}")
    assert refused_key.status == 401 and json.loads(refused_key.data)["error"]["code"] == "authentication_failed"
    answer = urllib3.request("GET", f"{stack.sandbox_url}/statements/2026-01-01?channel=sandbox",
                             headers={"Authorization": f"Bearer {made_up}"})
    assert answer.status == 401


def test_a_deleted_account_is_gone_for_new_operations_and_kept_for_its_own(stack):
    mine = builders.api(stack.client)
    key = builders.sandbox_account(stack.sandbox_url)["api_key"]
    account = bring(mine, key).get_json()
    before = pay(mine)
    deleted = stack.client.delete(f"/v1/channel_accounts/{account['id']}", headers=mine.headers())
    assert deleted.status_code == 200
    assert deleted.get_json() == {"id": account["id"], "object": "channel_account", "deleted": True}
    assert mine.get(f"/v1/channel_accounts/{account['id']}").status_code == 404
    assert mine.get("/v1/channel_accounts").get_json()["data"] == []
    after = pay(mine)
    refund = mine.post("/v1/refunds", {"payment": before["id"], "reference": builders.unique("re")})
    assert refund.status_code == 201 and refund.get_json()["status"] == "succeeded", refund.get_json()
    assert channel_reference(after["id"]) in statement(stack)
    assert {channel_reference(before["id"]), channel_reference(refund.get_json()["id"])} <= set(statement(stack, key))
    assert bring(mine, builders.sandbox_account(stack.sandbox_url)["api_key"]).status_code == 201  # another one


@pytest.mark.parametrize("body,status,code,param", [
    ({"channel": "nowhere", "credentials": {"api_key": "k"}}, 400, "channel_unknown", "channel"),
    ({"channel": "sandbox", "credentials": {"secret": "k"}}, 400, "parameter_unknown", "credentials[secret]"),
    ({"channel": "sandbox", "credentials": {"api_key": "k", "other": "k"}}, 400, "parameter_unknown",
     "credentials[other]"),
    ({"channel": "sandbox", "credentials": {}}, 400, "parameter_invalid", "credentials"),
    ({"channel": "sandbox", "credentials": {"api_key": "s3cr3t-" + "x" * 2000}}, 400, "parameter_invalid",
     "credentials[api_key]"),
    ({"channel": "sandbox", "credentials": "s3cr3t-as-a-string"}, 400, "parameter_invalid", "credentials"),
    ({"channel": "sandbox", "credentials": {"api_key": 12345678}}, 400, "parameter_invalid", "credentials[api_key]"),
    ({"channel": "sandbox"}, 400, "parameter_missing", "credentials"),
])
def test_bad_credentials_are_refused_without_being_quoted(stack, body, status, code, param):
    answer = builders.api(stack.client).post("/v1/channel_accounts", body)
    assert answer.status_code == status, answer.get_json()
    error = answer.get_json()["error"]
    assert (error["code"], error.get("param")) == (code, param)
    assert "s3cr3t" not in answer.get_data(as_text=True) and "12345678" not in answer.get_data(as_text=True)


def reconcile_today(*extra) -> tuple[int, list[dict]]:
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    result = CliRunner().invoke(main, ["reconcile", "--channel", "sandbox", "--date", today, "--json", *extra])
    runs = json.loads(result.output) if result.output.strip().startswith(("[", "{")) else result.output
    return result.exit_code, runs if isinstance(runs, list) else [runs]


def test_statements_and_reconciliation_are_per_account(stack):
    mine, theirs = builders.api(stack.client, "Mine"), builders.api(stack.client, "Theirs")
    account = bring(mine, builders.sandbox_account(stack.sandbox_url)["api_key"]).get_json()
    mine_paid = [pay(mine, amount) for amount in (2000, 2100, 2051)]
    for amount in (2200, 2300):
        pay(theirs, amount)
    refund = mine.post("/v1/refunds", {"payment": mine_paid[0]["id"], "reference": builders.unique("re")}).get_json()
    assert refund["status"] == "succeeded"

    code, runs = reconcile_today()
    assert code == 0, runs  # both clean: no line of one account is missing from the other's statement
    by_account = {run["channel_account"]: run for run in runs}
    assert set(by_account) == {None, account["id"]}
    assert (by_account[None]["statement_lines"], by_account[None]["matched"]) == (2, 2)
    assert (by_account[account["id"]]["statement_lines"], by_account[account["id"]]["matched"]) == (4, 4)
    assert by_account[None]["issues"] == by_account[account["id"]]["issues"] == []

    # A disagreement on one of the account's operations is that account's issue alone.
    with unit_of_work() as session:
        session.execute(update(Operation).where(Operation.id == mine_paid[1]["id"]).values(amount=2099))
    code, runs = reconcile_today()
    assert code == 3
    by_account = {run["channel_account"]: run for run in runs}
    assert by_account[None]["issues"] == []
    assert [(i["issue"], i["ours"]["id"]) for i in by_account[account["id"]]["issues"]] == [
        ("amount_mismatch", mine_paid[1]["id"])]


def test_near_real_time_passes_follow_each_account_on_its_own(stack, monkeypatch):
    from app.services import reconcile as recon

    monkeypatch.setattr(recon, "SETTLE_GRACE", dt.timedelta(0))  # lines settled up to the pass count
    mine, theirs = builders.api(stack.client, "Mine"), builders.api(stack.client, "Theirs")
    account = bring(mine, builders.sandbox_account(stack.sandbox_url)["api_key"]).get_json()
    paid = pay(mine)
    pay(theirs)
    time.sleep(1.1)  # windows end on whole seconds
    first = {run.channel_account: run for run in (recon.reconcile_recent("sandbox", account=account_id)
                                                   for account_id in recon.accounts("sandbox"))}
    assert set(first) == {None, account["id"]}
    assert [(run.statement_lines, run.matched, run.issues) for run in first.values()] == [(1, 1, [])] * 2
    # A second payment of the merchant: only its account's next pass sees it, from where that pass ended.
    late = pay(mine, 2100)
    time.sleep(1.1)
    platform = recon.reconcile_recent("sandbox")
    mine_next = recon.reconcile_recent("sandbox", account=account["id"])
    assert mine_next.window_start == first[account["id"]].window_end
    assert (platform.statement_lines, mine_next.statement_lines, mine_next.matched) == (0, 1, 1)
    assert paid["status"] == late["status"] == "succeeded"


def test_two_accounts_brought_at_once_for_one_channel_one_wins(stack):
    """Threads over real HTTP: two creates for the same merchant, mode and channel at the same time
    (two Idempotency-Keys, two keys at the sandbox): one 201, the other 409, one account stored."""
    import threading

    import requests

    api = builders.api(stack.client)
    for _ in range(4):
        keys = [builders.sandbox_account(stack.sandbox_url)["api_key"] for _ in range(2)]
        barrier, answers = threading.Barrier(2), []

        def hit(api_key: str, barrier=barrier, answers=answers):
            barrier.wait()
            answers.append(requests.post(f"{stack.api_url}/v1/channel_accounts", timeout=30,
                                         json={"channel": "sandbox", "credentials": {"api_key": api_key}},
                                         headers=api.headers(builders.unique("race"))))

        threads = [threading.Thread(target=hit, args=(key,)) for key in keys]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
        listed = api.get("/v1/channel_accounts").get_json()["data"]
        assert [a["id"] for a in listed] == [next(a.json()["id"] for a in answers if a.status_code == 201)]
        assert stack.client.delete(f"/v1/channel_accounts/{listed[0]['id']}", headers=api.headers()).status_code == 200


def test_the_sandbox_command_accepts_the_keys_it_issued_after_a_restart(clean, tmp_path):
    """A merchant channel account's key is kept by the router (encrypted) long after the sandbox's
    process: `payrouter sandbox`, stopped and started again on the same database, still takes the
    keys it issued (made under its accounts secret, stored there) for the same account, and still
    refuses any other. (Its operations, kept in memory, are forgotten: a sandbox's, not the key's.)"""
    import subprocess
    import sys
    import uuid

    from channels.sandbox.testing import write_channels_file
    from tests.live import free_port, process_env, stop, wait_http

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    path = write_channels_file(tmp_path / "channels.yaml", url)

    def started() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "app", "sandbox", "--port", str(port)],
                                env=process_env(clean, PAYROUTER_CHANNELS=path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"{url}/healthz", timeout=30, proc=proc)
        return proc

    def charge(key: str) -> urllib3.BaseHTTPResponse:
        body = {"operation": "payment", "reference": builders.unique("pay"), "amount": 1000, "currency": "USD",
                "payment_method": {"type": "card"}}
        return urllib3.request("POST", f"{url}/v1/channels/sandbox/charges", json=body,
                               headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex})

    def listed(key: str) -> list[str]:
        day = dt.datetime.now(dt.timezone.utc).date().isoformat()
        answer = urllib3.request("GET", f"{url}/statements/{day}?channel=sandbox",
                                 headers={"Authorization": f"Bearer {key}"})
        assert answer.status == 200, answer.data
        return [row["channel_reference"] for row in csv.DictReader(io.StringIO(answer.data.decode()))]

    proc = started()
    try:
        account = builders.sandbox_account(url)
        before = charge(account["api_key"])
        assert before.status == 200 and before.json()["status"] == "succeeded", before.data
    finally:
        stop(proc)
    proc = started()  # a new process: every operation forgotten, the key still valid
    try:
        after = charge(account["api_key"])
        assert after.status == 200 and after.json()["status"] == "succeeded", after.data
        assert listed(account["api_key"]) == [after.json()["id"]]  # the same account (the old charge is forgotten)
        other = builders.sandbox_account(url)["api_key"]
        assert other != account["api_key"] and charge(other).status == 200
        forged = account["api_key"][:-1] + ("A" if account["api_key"][-1] != "A" else "B")
        refused = charge(forged)
        assert refused.status == 401 and refused.json()["error"]["code"] == "authentication_failed"
    finally:
        stop(proc)


def _account_reads(engine, send) -> int:
    """How many statements reading channel_accounts ``send()`` runs on ``engine`` (this thread's)."""
    me, reads = threading.get_ident(), []

    def seen(_conn, _cursor, statement, *_rest):
        if threading.get_ident() == me and "FROM channel_accounts" in statement:
            reads.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        send()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return len(reads)


def account_of(operation_id: str) -> str | None:
    with unit_of_work() as session:
        return session.get(Operation, operation_id).channel_account_id


def test_a_merchants_accounts_are_read_once_then_again_after_each_change(stack, monkeypatch):
    """A payment reads its merchant's accounts once per process, not once per payment; a create or
    a delete committed here is obeyed by the next payment, and one announced by another process
    (its row written there, the notice through Redis) within the 2 s of every change notice."""
    from app.services import channel_accounts
    # The copy also re-reads every 5 s anyway; a loaded machine takes that long over the steps below,
    # and the re-read would answer for the notices this test is about.
    monkeypatch.setattr(channel_accounts._copy, "reload_interval", 3600.0)
    # Likewise the 0.5 s check: past it, a copy is fresh only if the listener is healthy at that instant,
    # and a moment of ill health on a loaded machine (a Redis call taken for hung) makes the copy re-read
    # the database, which would find the row written below without any notice.
    monkeypatch.setattr(channel_accounts._copy, "check_interval", 3600.0)
    assert notify.wait_until_healthy(10)
    # This process hears its own announcements too, through Redis, a moment after it acted on them: an
    # echo arriving after the row written below would re-read the copy (as any notice should) and find
    # it. Counted here, so the test waits for them first (a payment is quicker than an echo under load).
    heard = []
    monkeypatch.setitem(notify._callbacks, "channel_accounts",
                        [*notify._callbacks["channel_accounts"], lambda: heard.append(1)])
    mine = builders.api(stack.client)
    engine = get_engine()
    assert _account_reads(engine, lambda: pay(mine)) == 1
    assert _account_reads(engine, lambda: [pay(mine) for _ in range(3)]) == 0
    account = bring(mine, builders.sandbox_account(stack.sandbox_url)["api_key"]).get_json()
    assert account_of(pay(mine)["id"]) == account["id"]
    assert stack.client.delete(f"/v1/channel_accounts/{account['id']}", headers=mine.headers()).status_code == 200
    assert account_of(pay(mine)["id"]) is None
    deadline = time.monotonic() + 2
    while len(heard) < 2:  # the create's echo and the delete's
        assert time.monotonic() < deadline, "this process's own notices did not come back"
        time.sleep(0.01)
    # Another process brings an account: its row, then its notice; this process obeys the notice.
    other = builders.sandbox_account(stack.sandbox_url)["api_key"]
    watch = channel_accounts._copy.watch
    for _ in range(3):
        notices = watch.notice
        row = ChannelAccount(id=builders.unique("mca"), merchant_id=mine.merchant_id, livemode=False,
                             channel="sandbox", credentials_encrypted=account_channels.seal({"api_key": other}),
                             credential_fields=["api_key"], metadata_={}, created_at=utcnow())
        with unit_of_work() as session:
            session.add(row)
        chosen = account_of(pay(mine)["id"])
        if watch.notice == notices:
            assert chosen is None  # no notice yet: the copy holds
            break
        # A notice came meanwhile (a late echo; on a loaded machine the listener re-subscribing after a
        # stall tells every copy it may have missed one): the copy rightly read again. Take the row
        # back, have the copy read that, and try the step again.
        with unit_of_work() as session:
            session.delete(session.get(ChannelAccount, row.id))
        channel_accounts._copy.invalidate()
    else:
        pytest.fail("a notice came during each of three tries: the copy's holding could not be observed")
    held = channel_accounts._copy.get()
    notify.announce("channel_accounts")
    # Within 2 s the notice drops the copy (the next read is a new one); timed without the payments,
    # whose own time on a loaded machine is not the notice's.
    deadline = time.monotonic() + 2
    while channel_accounts._copy.get() is held:
        assert time.monotonic() < deadline, "the notice did not reach this process's copy"
        time.sleep(0.05)
    assert account_of(pay(mine)["id"]) is not None
