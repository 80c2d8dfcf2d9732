"""Disputes (contract §1 ``dp_…``, §2 events, §4 row 58): a payment of an amount ending in 58 succeeds,
then its channel reports a chargeback of the full amount; the merchant's settlement is debited,
``dispute.created`` is recorded, the dispute is listed and read through the API; the channel's
ruling closes it (won: the debit reversed; lost: it stands) with ``dispute.closed``. Through the
public API with the sandbox over HTTP and its callbacks applied by the RQ worker."""
import csv
import dataclasses
import datetime as dt
import io

import requests
from sqlalchemy import func, select

from app.adapters.channels_runtime import channel
from app.adapters.db import unit_of_work
from app.adapters.models import (
    ChannelCallback,
    Dispute,
    Event,
    JournalEntry,
    LedgerLine,
    Operation,
    ReconciliationIssue,
)
from app.services import callbacks, reconcile
from tests import builders
from tests.integration.test_admin_tx_pages import Console
from tests.integration.test_livemode import _live_key
from tests.support import wait_until


def events_of(object_id: str) -> list[str]:
    with unit_of_work() as session:
        return list(session.scalars(select(Event.type).where(Event.object_id == object_id)
                                    .order_by(Event.created_at, Event.id)))


def entries_of(object_id: str) -> list[tuple[str, list[int]]]:
    """The journal entries of an object, each as (kind, its lines' amounts sorted)."""
    with unit_of_work() as session:
        entries = session.execute(select(JournalEntry.id, JournalEntry.kind).where(JournalEntry.source_id == object_id)
                                  .order_by(JournalEntry.created_at, JournalEntry.id)).all()
        return [(kind, sorted(session.scalars(select(LedgerLine.amount).where(LedgerLine.entry_id == entry_id))))
                for entry_id, kind in entries]


def events_listed(api, type_: str) -> list[dict]:
    """The merchant's events of one type, as GET /v1/events answers them."""
    return [e for e in api.get("/v1/events?limit=100").get_json()["data"] if e["type"] == type_]


def paid(api, amount: int = 2058) -> dict:
    payment = api.post("/v1/payments", builders.payment_body(amount)).get_json()
    assert payment["status"] == "succeeded", payment
    return payment


def at_channel(dispute_id: str) -> str:
    with unit_of_work() as session:
        return session.get(Dispute, dispute_id).channel_reference


def rule(stack, dispute_id: str, status: str) -> requests.Response:
    """The card network's ruling at the sandbox (its close endpoint)."""
    return requests.post(f"{stack.sandbox_url}/disputes/{at_channel(dispute_id)}/close", json={"status": status},
                         timeout=10)


def closed(stack, api, dispute_id: str, status: str) -> dict:
    def done():
        stack.work()
        found = api.get(f"/v1/disputes/{dispute_id}").get_json()
        return found if found["status"] == status else None

    return wait_until(done, timeout=15, what=f"{dispute_id} {status}")


def available(api, currency: str = "USD") -> int:
    balance = api.get("/v1/balance").get_json()
    return next((row["amount"] for row in balance["available"] if row["currency"] == currency), 0)


def test_58_is_disputed_debited_from_the_merchant_and_read_through_the_api(stack):
    api = builders.api(stack.client)
    payment = paid(api)
    dispute = stack.dispute_of(api, payment["id"])
    assert dispute["id"].startswith("dp_") and dispute["object"] == "dispute" and dispute["livemode"] is False
    assert (dispute["payment"], dispute["amount"], dispute["currency"]) == (payment["id"], 2058, "USD")
    assert (dispute["status"], dispute["reason"], dispute["closed_at"]) == ("needs_response", "fraudulent", None)
    assert events_of(dispute["id"]) == ["dispute.created"]
    assert entries_of(dispute["id"]) == [("dispute", [-2058, 2058])]  # settlement −A, clearing +A
    assert available(api) == 2058 - payment["fee"] - 2058  # paid, less its fee (still charged), less the dispute
    lines = api.get(f"/v1/balance_transactions?source={dispute['id']}").get_json()["data"]
    assert [(t["type"], t["amount"], t["fee"], t["net"]) for t in lines] == [("dispute", -2058, 0, -2058)]
    assert api.get(f"/v1/disputes/{dispute['id']}").get_json() == dispute
    assert [e["data"]["object"] for e in events_listed(api, "dispute.created")] == [dispute]
    # The payment itself is unchanged: it succeeded, and its own ledger is its own.
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "succeeded"


def test_the_list_of_disputes_filters_and_pages_like_the_others(stack):
    api = builders.api(stack.client)
    first, second = paid(api, 1058), paid(api, 3058)
    one, two = stack.dispute_of(api, first["id"]), stack.dispute_of(api, second["id"])
    listed = api.get("/v1/disputes").get_json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert {d["id"] for d in listed["data"]} == {one["id"], two["id"]}
    newest, oldest = listed["data"]
    page = api.get("/v1/disputes?limit=1").get_json()
    assert [d["id"] for d in page["data"]] == [newest["id"]] and page["has_more"] is True
    after = api.get(f"/v1/disputes?limit=1&starting_after={newest['id']}").get_json()
    assert [d["id"] for d in after["data"]] == [oldest["id"]] and after["has_more"] is False
    before = api.get(f"/v1/disputes?ending_before={oldest['id']}").get_json()
    assert [d["id"] for d in before["data"]] == [newest["id"]]
    assert [d["id"] for d in api.get(f"/v1/disputes?payment={first['id']}").get_json()["data"]] == [one["id"]]
    assert len(api.get("/v1/disputes?status=needs_response").get_json()["data"]) == 2
    assert api.get("/v1/disputes?status=won").get_json()["data"] == []
    future = int(dt.datetime.now(dt.timezone.utc).timestamp()) + 3600
    assert api.get(f"/v1/disputes?created[gte]={future}").get_json()["data"] == []
    for query, param in (("status=open", "status"), ("customer=cus_1", "customer"), ("payment=re_1", "payment")):
        response = api.get(f"/v1/disputes?{query}")
        assert response.status_code == 400 and response.get_json()["error"]["param"] == param, query
    # Another merchant, and the same merchant's live key, see none of them: 404 like an unknown id.
    for other in (builders.api(stack.client, name="Other"), _live_key(api)):
        assert other.get("/v1/disputes").get_json()["data"] == []
        assert other.get(f"/v1/disputes/{one['id']}").status_code == 404
    assert api.get("/v1/disputes/dp_nope").status_code == 404


def test_a_dispute_won_gives_the_debit_back_and_one_lost_keeps_it(stack, app):
    api = builders.api(stack.client)
    payment = paid(api, 2058)
    won, lost = stack.dispute_of(api, payment["id"]), stack.dispute_of(api, paid(api, 4058)["id"])
    before = available(api)
    assert rule(stack, won["id"], "won").status_code == 200
    assert rule(stack, lost["id"], "lost").status_code == 200
    won, lost = closed(stack, api, won["id"], "won"), closed(stack, api, lost["id"], "lost")
    assert won["closed_at"] and lost["closed_at"]
    assert entries_of(won["id"]) == [("dispute", [-2058, 2058]), ("dispute_reversal", [-2058, 2058])]
    assert entries_of(lost["id"]) == [("dispute", [-4058, 4058])]
    assert available(api) == before + 2058
    assert events_of(won["id"]) == events_of(lost["id"]) == ["dispute.created", "dispute.closed"]
    assert sorted(e["data"]["object"]["status"] for e in events_listed(api, "dispute.closed")) == ["lost", "won"]
    assert [d["id"] for d in api.get("/v1/disputes?status=won").get_json()["data"]] == [won["id"]]
    # The settlement report's disputes column: what left for disputes, net of the one won back.
    day = dt.datetime.now(dt.timezone.utc).date().isoformat()
    report = list(csv.DictReader(io.StringIO(api.get(f"/v1/reports/settlement?date={day}").get_data(as_text=True))))
    assert [(r["channel"], r["disputes"], r["refunds"]) for r in report] == [("sandbox", "4058", "0")]
    row = {k: int(v) for k, v in report[0].items() if k not in ("currency", "channel")}
    assert row["gross"] == 2058 + 4058 and row["net"] == row["gross"] - row["fees"] - 4058 == available(api)
    # The network rules once: the sandbox refuses a second ruling, and nothing more is applied.
    assert rule(stack, won["id"], "lost").status_code == 409
    stack.work()
    assert api.get(f"/v1/disputes/{won['id']}").get_json()["status"] == "won"
    # The console's timeline of the payment tells the dispute's story: reported, debited, closed, reversed.
    viewer = Console(app, "viewer")
    story = viewer.text(f"/admin/transactions/{payment['id']}")
    assert story.count('data-type="dispute"') == 2 and f"dispute {won['id']} closed: won" in story
    assert "dispute_reversal: -20.58 USD" in story and "event dispute.closed" in story  # major units
    assert payment["id"] in viewer.text(f"/admin/transactions/{won['id']}")  # a dispute's id: its payment's story
    # The Transactions search box takes a dispute's id and opens its payment's page.
    found = viewer.client.get(f"/admin/transactions/?id=+{won['id']}+")
    assert found.status_code == 302 and found.headers["Location"].endswith(f"/admin/transactions/{payment['id']}")
    assert 'data-type="dispute"' in viewer.text(found.headers["Location"])
    assert 'data-id="' not in viewer.text("/admin/transactions/?id=dp_nope")  # no such dispute: nothing found


def test_a_repeated_dispute_callback_is_applied_once(stack):
    api = builders.api(stack.client)
    payment = paid(api)
    dispute = stack.dispute_of(api, payment["id"])
    sandbox, reference = channel("sandbox"), at_channel(dispute["id"])
    payment_reference = _payment_reference(payment["id"])

    def post(status: str, event_id: str | None = None) -> None:
        body, headers = builders.signed_dispute_callback(sandbox, payment["id"], payment_reference, reference, status,
                                                         2058, event_id=event_id)
        assert requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers,
                             timeout=10).status_code == 200

    post("needs_response", "again")  # the same report under another event id
    post("needs_response", "again")  # and that event delivered twice
    post("won", "ruled")
    post("won", "ruled-again")
    post("lost", "ruled-late")  # a contradicting late word: a closed dispute stays closed
    stack.work()
    assert api.get(f"/v1/disputes/{dispute['id']}").get_json()["status"] == "won"
    assert [d["id"] for d in api.get(f"/v1/disputes?payment={payment['id']}").get_json()["data"]] == [dispute["id"]]
    assert entries_of(dispute["id"]) == [("dispute", [-2058, 2058]), ("dispute_reversal", [-2058, 2058])]
    assert events_of(dispute["id"]) == ["dispute.created", "dispute.closed"]
    with unit_of_work() as session:
        outcomes = sorted(session.scalars(select(ChannelCallback.outcome).where(
            ChannelCallback.dispute.is_not(None))))
    # The sandbox's own report, then one inbox row per event id (the twice-delivered one is one row).
    assert outcomes == ["applied", "applied", "duplicate", "duplicate", "duplicate"]


def _payment_reference(payment_id: str) -> str:
    """The payment's reference at its channel (what a dispute callback names it by)."""
    with unit_of_work() as session:
        return session.get(Operation, payment_id).channel_reference


def test_a_dispute_of_a_payment_that_did_not_succeed_or_does_not_fit_is_set_aside(stack):
    api = builders.api(stack.client)
    failed = api.post("/v1/payments", builders.payment_body(2051)).get_json()
    payment = paid(api, 1000)
    sandbox = channel("sandbox")
    for reference, amount in ((failed["id"], 2051), (payment["id"], 1001)):  # failed; more than was paid
        at = _payment_reference(reference)
        body, headers = builders.signed_dispute_callback(sandbox, reference, at, builders.unique("sbxdp"),
                                                         "needs_response", amount)
        assert requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers,
                             timeout=10).status_code == 200
    # A notice the inbox cannot take (a reason longer than its column, a NUL) is refused before it is kept.
    for reason in ("x" * 61, "fraud\x00"):
        body, headers = builders.signed_dispute_callback(sandbox, payment["id"], _payment_reference(payment["id"]),
                                                         builders.unique("sbxdp"), "needs_response", 1000,
                                                         reason=reason)
        refused = requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers, timeout=10)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "callback_malformed", reason
    stack.work()
    assert api.get("/v1/disputes").get_json()["data"] == []
    with unit_of_work() as session:
        assert sorted(session.scalars(select(ChannelCallback.outcome))) == ["dispute_mismatch", "not_disputable"]
        assert session.scalar(select(func.count()).select_from(JournalEntry).where(
            JournalEntry.kind.startswith("dispute"))) == 0


def test_a_chargeback_after_a_refund_never_takes_back_more_than_the_payment(stack):
    """…58 refunded (2,000 of 2,058) before the sandbox's chargeback of the full amount arrives: the
    dispute does not fit what is left (58), so it is set aside as dispute_mismatch — never debited
    beyond the payment — and the statement's dispute line stays for reconciliation to report."""
    api = builders.api(stack.client)
    payment = paid(api, 2058)
    refund = api.post("/v1/refunds", {"payment": payment["id"], "amount": 2000, "reference": builders.unique("re")})
    assert refund.status_code == 201 and refund.get_json()["status"] == "succeeded", refund.get_json()

    def set_aside():
        stack.work()
        with unit_of_work() as session:
            return session.scalar(select(ChannelCallback.outcome).where(ChannelCallback.outcome == "dispute_mismatch"))

    wait_until(set_aside, timeout=15, what="the chargeback set aside")
    assert api.get("/v1/disputes").get_json()["data"] == []
    lines = api.get("/v1/balance_transactions?limit=100").get_json()["data"]
    assert sorted(t["type"] for t in lines) == ["payment", "refund"]
    assert available(api) == 2058 - payment["fee"] - 2000


def test_the_statement_lists_the_dispute_and_reconciliation_matches_it(stack):
    api = builders.api(stack.client)
    won = stack.dispute_of(api, paid(api, 2058)["id"])
    open_one = stack.dispute_of(api, paid(api, 3058)["id"])
    rule(stack, won["id"], "won")
    closed(stack, api, won["id"], "won")
    today = dt.datetime.now(dt.timezone.utc).date()
    csv_text = requests.get(f"{stack.sandbox_url}/statements/{today.isoformat()}?channel=sandbox", timeout=10).text
    lines = {line.split(",")[0]: line.split(",")[1:6] for line in csv_text.splitlines()[1:]}
    assert lines[at_channel(won["id"])] == ["dispute", "2058", "USD", "won", "0"]
    assert lines[at_channel(open_one["id"])] == ["dispute", "3058", "USD", "needs_response", "0"]
    run = reconcile.reconcile("sandbox", today)
    assert run.issues == [] and run.statement_lines == 4 and run.matched == 4  # two payments, two disputes
    # A dispute the channel lists and we never heard of is reported (its callback was lost).
    charge = stack.sandbox.psp.store.by_reference("sandbox", paid(api, 5000)["id"])
    ghost = stack.sandbox.psp.disputes.open(charge)
    run = reconcile.reconcile("sandbox", today)
    assert [(i["issue"], i["channel_reference"], i["theirs"]["operation"]) for i in run.issues] == [
        ("missing_in_payrouter", ghost.id, "dispute")]


def test_a_dispute_of_a_payment_made_with_a_merchant_account_is_on_that_accounts_statement(stack):
    from tests.integration.test_channel_accounts import bring, reconcile_today, statement

    api = builders.api(stack.client)
    key = builders.sandbox_account(stack.sandbox_url)["api_key"]
    account = bring(api, key).get_json()
    dispute = stack.dispute_of(api, paid(api, 2058)["id"])
    assert statement(stack, key)[at_channel(dispute["id"])]["operation"] == "dispute"
    assert at_channel(dispute["id"]) not in statement(stack)  # not the platform account's
    code, runs = reconcile_today()
    assert code == 0, runs
    by_account = {run["channel_account"]: run for run in runs}
    assert (by_account[account["id"]]["statement_lines"], by_account[account["id"]]["matched"]) == (2, 2)
    with unit_of_work() as session:
        assert session.get(Dispute, dispute["id"]).channel_account_id == account["id"]
    # The platform's statement does not list it, and is not expected to: no missing_at_channel there.
    assert by_account[account["id"]]["issues"] == by_account[None]["issues"] == []


def test_a_dispute_carries_reference_and_metadata_read_only(stack):
    """Contract §1: every object carries ``reference`` and ``metadata``; a dispute is the channel's,
    so they are null and {} and no POST changes them (the contract lists only GETs for disputes)."""
    api = builders.api(stack.client)
    dispute = stack.dispute_of(api, paid(api)["id"])
    assert (dispute["reference"], dispute["metadata"]) == (None, {})
    assert [e["data"]["object"]["reference"] for e in events_listed(api, "dispute.created")] == [None]
    update = api.post(f"/v1/disputes/{dispute['id']}", {"metadata": {"case": "1"}})
    assert update.status_code in (404, 405), update.get_data(as_text=True)
    assert api.get(f"/v1/disputes/{dispute['id']}").get_json()["metadata"] == {}
    # The reference filter exists (the field does) and matches no dispute; an unknown filter is still refused.
    assert api.get("/v1/disputes?reference=order-1").get_json()["data"] == []
    unknown = api.get("/v1/disputes?customer=cus_1")
    assert unknown.status_code == 400 and unknown.get_json()["error"]["param"] == "customer"


def test_a_disputed_payment_is_not_refunded_until_its_dispute_is_won(stack):
    api = builders.api(stack.client)
    payment, lost_one = paid(api, 2058), paid(api, 3058)
    dispute = stack.dispute_of(api, payment["id"])
    refused = api.post("/v1/refunds", builders.refund_body(payment["id"], amount=100))
    error = refused.get_json()["error"]
    assert refused.status_code == 409, error
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "payment_disputed", "payment")
    assert dispute["id"] in error["message"] and error["request_id"]
    with unit_of_work() as session:  # refused before any refund was written, so before any channel call
        assert session.scalar(select(func.count()).select_from(Operation).where(Operation.kind == "refund")) == 0
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["amount_refunded"] == 0
    # Lost: still refused. Won: what is left is refundable, and no more.
    lost = stack.dispute_of(api, lost_one["id"])
    rule(stack, lost["id"], "lost")
    closed(stack, api, lost["id"], "lost")
    again = api.post("/v1/refunds", builders.refund_body(lost_one["id"]))
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "payment_disputed"
    rule(stack, dispute["id"], "won")
    closed(stack, api, dispute["id"], "won")
    part = api.post("/v1/refunds", builders.refund_body(payment["id"], amount=1000))
    assert part.status_code == 201 and part.get_json()["status"] == "succeeded", part.get_json()
    rest = api.post("/v1/refunds", builders.refund_body(payment["id"])).get_json()
    assert (rest["status"], rest["amount"]) == ("succeeded", 1058)
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["amount_refunded"] == 2058


def test_a_dispute_the_channels_statement_lacks_is_missing_at_channel(stack):
    """Reconciliation both ways: a dispute we recorded (its notice said so) that the statement of its
    channel account does not list is reported ``missing_at_channel``."""
    api = builders.api(stack.client)
    listed = stack.dispute_of(api, paid(api, 2058)["id"])
    payment = paid(api, 4000)
    ghost = builders.unique("sbxdp")  # a dispute the channel never lists
    body, headers = builders.signed_dispute_callback(channel("sandbox"), payment["id"],
                                                     _payment_reference(payment["id"]), ghost, "needs_response", 4000)
    assert requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers,
                         timeout=10).status_code == 200
    ours = stack.dispute_of(api, payment["id"])
    with unit_of_work() as session:
        assert session.get(Dispute, listed["id"]).channel_account_id is None  # the platform's account
    run = reconcile.reconcile("sandbox", dt.datetime.now(dt.timezone.utc).date())
    assert [(i["issue"], i["channel_reference"], i["ours"]) for i in run.issues] == [
        ("missing_at_channel", ghost, {"id": ours["id"], "status": "needs_response", "amount": 4000,
                                       "currency": "USD"})]
    assert run.matched == run.statement_lines == 3  # two payments and the dispute the channel reported
    # The channel lists it after all (a late statement): the next run closes the issue.
    sandbox = stack.sandbox.psp
    late = sandbox.disputes.open(sandbox.store.by_reference("sandbox", payment["id"]))
    sandbox.store.keep(dataclasses.replace(late, id=ghost))
    with unit_of_work() as session:
        issue = session.scalars(select(ReconciliationIssue).where(ReconciliationIssue.channel_reference == ghost)).one()
        assert issue.status == "open"
    reconcile.reconcile("sandbox", dt.datetime.now(dt.timezone.utc).date())
    with unit_of_work() as session:
        assert session.get(ReconciliationIssue, issue.id).status == "resolved"


def dispute_callback(session, payment_id: str) -> ChannelCallback:
    """The one dispute callback about a payment in the inbox."""
    [row] = [row for row in session.scalars(select(ChannelCallback).where(ChannelCallback.reference == payment_id))
             if row.dispute]
    return row


def test_a_dispute_reported_before_its_payment_is_final_waits_in_the_inbox(stack):
    """A dispute notice about a payment still processing (row 52: its success callback comes ~1 s
    later) is not set aside: it stays in the inbox and is applied once the payment has succeeded."""
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(2052)).get_json()
    assert payment["status"] == "processing", payment
    dispute_ref = builders.unique("sbxdp")
    body, headers = builders.signed_dispute_callback(channel("sandbox"), payment["id"],
                                                     _payment_reference(payment["id"]), dispute_ref,
                                                     "needs_response", 2052)
    assert requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers,
                         timeout=10).status_code == 200
    stack.work()
    with unit_of_work() as session:
        waiting = dispute_callback(session, payment["id"])
        assert (waiting.processed_at, waiting.outcome) == (None, "waiting_payment")
    dispute = stack.dispute_of(api, payment["id"])  # the payment's callback, then the retried notice
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "succeeded"
    assert (dispute["amount"], dispute["status"]) == (2052, "needs_response")
    assert at_channel(dispute["id"]) == dispute_ref and events_of(dispute["id"]) == ["dispute.created"]
    with unit_of_work() as session:
        done = session.get(ChannelCallback, waiting.id)
        assert done.processed_at is not None and done.outcome == "applied"


def test_a_dispute_waiting_for_a_payment_that_fails_is_set_aside(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(2053)).get_json()  # processing, then failed
    body, headers = builders.signed_dispute_callback(channel("sandbox"), payment["id"],
                                                     _payment_reference(payment["id"]), builders.unique("sbxdp"),
                                                     "needs_response", 2053)
    assert requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers,
                         timeout=10).status_code == 200

    def set_aside():
        stack.work()
        with unit_of_work() as session:
            row = dispute_callback(session, payment["id"])
            return row.outcome if row.processed_at is not None else None

    assert wait_until(set_aside, timeout=20, what="the notice set aside") == "not_disputable"
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "failed"
    assert api.get(f"/v1/disputes?payment={payment['id']}").get_json()["data"] == []


def test_a_58_authorized_for_manual_capture_is_disputed_once_captured(stack):
    """Row 58 with ``capture_method: manual``: nothing is disputed while it is only authorized (nothing
    was taken); once captured, in part here, the sandbox reports a chargeback of all it captured."""
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(2058, capture_method="manual")).get_json()
    assert payment["status"] == "requires_capture", payment
    assert stack.sandbox.psp.store.by_reference("sandbox", payment["id"]).status == "requires_capture"
    captured = api.post(f"/v1/payments/{payment['id']}/capture", {"amount": 2000})
    assert captured.status_code == 200 and captured.get_json()["amount_captured"] == 2000, captured.get_json()
    dispute = stack.dispute_of(api, payment["id"])
    assert (dispute["amount"], dispute["currency"], dispute["status"]) == (2000, "USD", "needs_response")
    assert entries_of(dispute["id"]) == [("dispute", [-2000, 2000])]
    assert events_of(dispute["id"]) == ["dispute.created"]
    refused = api.post("/v1/refunds", builders.refund_body(payment["id"], amount=100))
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "payment_disputed"


def test_a_second_chargeback_of_a_payment_never_takes_back_more_than_is_left(stack):
    """Two chargebacks of one payment (another case at the channel): the second fits only what the
    first left; past that it is set aside as dispute_mismatch, never debited. After the first is won,
    the whole payment can be disputed again."""
    api = builders.api(stack.client)
    payment = paid(api)  # 2058: the sandbox's own chargeback of 2058 arrives
    first = stack.dispute_of(api, payment["id"])
    sandbox, at = channel("sandbox"), _payment_reference(payment["id"])

    def chargeback(amount: int) -> str:
        reference = builders.unique("sbxdp")
        body, headers = builders.signed_dispute_callback(sandbox, payment["id"], at, reference, "needs_response",
                                                         amount)
        assert requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers,
                             timeout=10).status_code == 200
        stack.work()
        return reference

    chargeback(1)  # nothing is left while the first is open
    disputes = api.get(f"/v1/disputes?payment={payment['id']}").get_json()["data"]
    assert [d["id"] for d in disputes] == [first["id"]]
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(ChannelCallback).where(
            ChannelCallback.outcome == "dispute_mismatch")) == 1
    assert rule(stack, first["id"], "won").status_code == 200
    closed(stack, api, first["id"], "won")
    chargeback(2058)  # the first was won: the payment is whole again
    assert len(api.get(f"/v1/disputes?payment={payment['id']}").get_json()["data"]) == 2


def _report_chargeback(stack, payment: dict, amount: int) -> str:
    """The channel reports a chargeback of ``amount`` of ``payment`` (a new dispute id): the inbox row's id."""
    body, headers = builders.signed_dispute_callback(channel("sandbox"), payment["id"],
                                                     _payment_reference(payment["id"]), builders.unique("sbxdp"),
                                                     "needs_response", amount)
    answer = requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def _outcome(callback_id: str) -> tuple[bool, str | None]:
    with unit_of_work() as session:
        row = session.get(ChannelCallback, callback_id)
        return row.processed_at is not None, row.outcome


def test_a_chargeback_while_a_refund_is_in_flight_waits_and_is_applied_once_the_refund_failed(stack):
    """Attack a14 S2: 2,000 paid, a refund of 1,953 still processing (row 53: it fails by callback),
    the channel reports a chargeback of all 2,000. It fits only if the refund fails, so it waits (not
    set aside for good); the refund fails and the chargeback is applied: the merchant debited once,
    no refund possible after it, the ledger balanced."""
    from tests.conftest import assert_ledger_balanced

    api = builders.api(stack.client)
    payment = paid(api, 2000)
    refund = api.post("/v1/refunds", {"payment": payment["id"], "amount": 1953, "reference": builders.unique("re")})
    assert refund.get_json()["status"] == "processing", refund.get_json()
    notice = _report_chargeback(stack, payment, 2000)
    assert callbacks.apply(notice) == "waiting_refund"  # before the refund's own callback
    assert _outcome(notice) == (False, "waiting_refund")
    assert stack.settle(api, f"/v1/refunds/{refund.get_json()['id']}")["status"] == "failed"
    dispute = stack.dispute_of(api, payment["id"])  # the retried notice, once due again
    assert (dispute["amount"], dispute["status"]) == (2000, "needs_response")
    assert _outcome(notice) == (True, "applied")
    assert available(api) == 2000 - payment["fee"] - 2000
    again = api.post("/v1/refunds", {"payment": payment["id"], "reference": builders.unique("re")})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "payment_disputed"
    assert_ledger_balanced(stack.config)


def test_a_chargeback_waiting_for_a_refund_that_succeeds_is_judged_on_it(stack):
    """A refund of 1,952 in flight (row 52: it succeeds by callback): a chargeback of 2,000 waits,
    then, the refund succeeded, no longer fits (48 left) and is set aside; one of 48 fits even if the
    refund succeeds, so it is applied at once."""
    from tests.conftest import assert_ledger_balanced

    api = builders.api(stack.client)
    payment = paid(api, 2000)
    refund = api.post("/v1/refunds", {"payment": payment["id"], "amount": 1952, "reference": builders.unique("re")})
    assert refund.get_json()["status"] == "processing", refund.get_json()
    whole, rest = _report_chargeback(stack, payment, 2000), _report_chargeback(stack, payment, 48)
    assert callbacks.apply(whole) == "waiting_refund"
    assert callbacks.apply(rest) == "applied"
    assert stack.settle(api, f"/v1/refunds/{refund.get_json()['id']}")["status"] == "succeeded"

    def judged():
        stack.work()
        return _outcome(whole)[0]

    wait_until(judged, timeout=15, what="the waiting chargeback judged")
    assert _outcome(whole) == (True, "dispute_mismatch")
    assert [d["amount"] for d in api.get(f"/v1/disputes?payment={payment['id']}").get_json()["data"]] == [48]
    assert available(api) == 2000 - payment["fee"] - 1952 - 48
    assert_ledger_balanced(stack.config)


def test_a_drain_batch_judges_a_chargeback_after_its_own_settlement_of_a_refund(stack):
    """The refund's failure callback and the chargeback in one drain batch, in that order: the
    chargeback is judged on the payment after the refund failed (the batch's own settlement), not on
    what the batch read before it, so it is applied in that same batch."""
    api = builders.api(stack.client)
    payment = paid(api, 2000)
    refund = api.post("/v1/refunds", {"payment": payment["id"], "amount": 1953,
                                      "reference": builders.unique("re")}).get_json()
    assert refund["status"] == "processing", refund

    def refund_callback_stored():
        with unit_of_work() as session:
            return session.scalar(select(ChannelCallback.id).where(ChannelCallback.reference == refund["id"]))

    wait_until(refund_callback_stored, timeout=10, what="the refund's failure callback in the inbox")
    notice = _report_chargeback(stack, payment, 2000)
    assert callbacks.drain() >= 2  # one batch: the refund's callback first, then the chargeback
    assert api.get(f"/v1/refunds/{refund['id']}").get_json()["status"] == "failed"
    assert _outcome(notice) == (True, "applied")
    assert [d["amount"] for d in api.get(f"/v1/disputes?payment={payment['id']}").get_json()["data"]] == [2000]
