"""The console's data services with known data: transaction search and its filters, resolving a
reconciliation issue, redelivering a webhook, the dashboard's figures."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import AuditLog, Operation, new_id, utcnow
from app.adapters.webhook_models import WebhookDelivery
from app.domain.errors import Conflict, InvalidRequest, NotFound
from app.services import dashboard, issues, reconciliation_admin, search, webhook_admin
from app.services.search import Criteria
from tests import builders
from tests.webhook_support import create_endpoint, pump, webhook_config
from tests.webhook_support import transfer as make_transfer


def add_operation(merchant: str, *, at: datetime, kind: str = "payment", status: str = "succeeded",
                  channel: str | None = "acq_alpha", customer: str | None = "cus_1", amount: int = 1000,
                  failure_code: str | None = None, reference: str | None = None, order: str | None = None,
                  currency: str = "USD", fee: int = 30, routing: dict | None = None) -> str:
    op_id = new_id("pay")
    with unit_of_work() as session:
        session.add(Operation(id=op_id, merchant_id=merchant, kind=kind, status=status, version=0, amount=amount,
                              currency=currency, fee=fee, amount_refunded=0, reference=reference or builders.unique(),
                              metadata_={}, customer={"id": customer} if customer else None, routing=routing or {},
                              channel=channel, failure_code=failure_code, order_id=order, query_count=0, created_at=at,
                              updated_at=at))
    return op_id


def ids(results) -> list[str]:
    return [row["id"] for row in results.rows]


def test_search_filters_and_keyset_pages(client):
    shop, _ = builders.merchant("Shop")
    other, _ = builders.merchant("Other")
    now = utcnow()
    a = add_operation(shop, at=now - timedelta(minutes=1), reference="order-1", customer="cus_a")
    b = add_operation(shop, at=now - timedelta(minutes=2), status="failed", failure_code="card_declined",
                      channel="acq_beta")
    c = add_operation(other, at=now - timedelta(days=2), kind="withdrawal", status="processing", customer="cus_a")
    d = add_operation(other, at=now - timedelta(days=3), kind="refund", channel=None)
    api = builders.api(client, "Transfers")
    moved, _ = make_transfer(api)

    everything = search.search(Criteria())
    assert ids(everything)[:1] == [moved["id"]] and set(ids(everything)) >= {a, b, c, d, moved["id"]}
    assert ids(search.search(Criteria(id=b))) == [b]
    assert ids(search.search(Criteria(reference="order-1"))) == [a]
    assert ids(search.search(Criteria(reference=moved["reference"]))) == [moved["id"]]
    assert ids(search.search(Criteria(customer="cus_a"))) == [a, c]  # customer: operations only
    assert ids(search.search(Criteria(status="failed"))) == [b]
    assert search.search(Criteria(status="failed")).rows[0]["failure_code"] == "card_declined"
    assert ids(search.search(Criteria(kind="withdrawal"))) == [c]
    assert ids(search.search(Criteria(kind="transfer"))) == [moved["id"]]
    assert ids(search.search(Criteria(channel="acq_beta"))) == [b]
    assert ids(search.search(Criteria(merchant=other))) == [c, d]
    assert ids(search.search(Criteria(since=now - timedelta(days=2, hours=1), until=now - timedelta(days=1)))) == [c]
    assert ids(search.search(Criteria(merchant=shop, status="succeeded", channel="acq_alpha"))) == [a]
    assert ids(search.search(Criteria(reference="nothing-like-it"))) == []

    first = search.search(Criteria(merchant=shop), limit=1)
    assert ids(first) == [a] and first.next_cursor
    second = search.search(Criteria(merchant=shop), limit=1, after=first.next_cursor)
    assert ids(second) == [b] and second.next_cursor is None
    pages, cursor, seen = 0, None, []
    while True:  # every row exactly once, newest first, across both tables
        page = search.search(Criteria(), limit=2, after=cursor)
        seen += ids(page)
        pages, cursor = pages + 1, page.next_cursor
        if cursor is None:
            break
    assert seen == ids(everything) and pages == 3

    with pytest.raises(InvalidRequest):
        search.search(Criteria(kind="nonsense"))
    with pytest.raises(InvalidRequest):
        search.search(Criteria(), after="not-a-cursor")


def test_search_by_a_payment_status_and_by_order(client):
    """Payments' own statuses (requires_action, requires_capture, canceled) are searchable, and so is an
    order (contract §5: "search by id, reference, order, …"), which names no transfer."""
    shop, _ = builders.merchant("Shop")
    now = utcnow()
    held = add_operation(shop, at=now - timedelta(minutes=1), status="requires_capture", order="ord_search1")
    voided = add_operation(shop, at=now - timedelta(minutes=2), status="canceled")
    step = add_operation(shop, at=now - timedelta(minutes=3), status="requires_action", order="ord_search1")
    add_operation(shop, at=now - timedelta(minutes=4), order="ord_search2")
    make_transfer(builders.api(client, "Transfers"))
    assert ids(search.search(Criteria(status="requires_capture"))) == [held]
    assert ids(search.search(Criteria(status="canceled"))) == [voided]
    assert ids(search.search(Criteria(status="requires_action"))) == [step]
    assert ids(search.search(Criteria(order="ord_search1"))) == [held, step]
    assert ids(search.search(Criteria(order="ord_search1", status="requires_action"))) == [step]
    assert ids(search.search(Criteria(order="ord_nothing"))) == []


def open_issue(channel: str = "acq_alpha", kind: str = "status_mismatch") -> str:
    found = [{"issue": kind, "channel_reference": builders.unique("ch"), "ours": {"id": "pay_x", "status": "failed"},
              "theirs": {"status": "succeeded"}}]
    with unit_of_work() as session:
        issues.record(session, channel, found)
    return found[0]["id"]


def test_resolve_an_issue_with_a_note(clean):
    first, second = open_issue(), open_issue("acq_beta", "fee_mismatch")
    listed, cursor = reconciliation_admin.issue_list()
    assert [i["id"] for i in listed] == [second, first] and cursor is None
    with pytest.raises(InvalidRequest):
        reconciliation_admin.resolve(first, "   ", "olga")
    resolved = reconciliation_admin.resolve(first, "refunded by hand", "olga")
    assert resolved["status"] == "resolved" and resolved["resolved_by"] == "olga"
    with pytest.raises(Conflict):
        reconciliation_admin.resolve(first, "again", "olga")
    assert [i["id"] for i in reconciliation_admin.issue_list()[0]] == [second]
    assert [i["id"] for i in reconciliation_admin.issue_list(status="resolved")[0]] == [first]
    with unit_of_work() as session:
        row = session.scalars(select(AuditLog).where(AuditLog.target == first)).one()
        assert (row.actor, row.action, row.reason) == ("olga", "reconciliation.resolve", "refunded by hand")
        assert row.before["status"] == "open" and row.after["status"] == "resolved"


def test_redeliver_a_webhook(wh_client, receiver):
    hooks = receiver()
    api = builders.api(wh_client)
    endpoint = create_endpoint(api, hooks.url)
    make_transfer(api)
    pump()
    assert len(hooks.requests) == 1
    deliveries, _ = webhook_admin.list_deliveries(endpoint=endpoint["id"])
    assert [(d["status"], d["redelivery"]) for d in deliveries] == [("succeeded", False)]
    assert [e["id"] for e in webhook_admin.endpoints()] == [endpoint["id"]]

    again = webhook_admin.redeliver(deliveries[0]["id"], "olga", reason="merchant lost it")
    pump()
    assert len(hooks.requests) == 2 and hooks.requests[0]["body"] == hooks.requests[1]["body"]
    listed, _ = webhook_admin.list_deliveries(endpoint=endpoint["id"])
    assert [(d["id"], d["status"], d["redelivery"]) for d in listed][0] == (again["id"], "succeeded", True)
    assert [d["id"] for d in webhook_admin.list_deliveries(status="succeeded", limit=1)[0]] == [again["id"]]
    with unit_of_work() as session:
        row = session.scalars(select(AuditLog).where(AuditLog.action == "webhook.redeliver")).one()
        assert (row.actor, row.target, row.reason) == ("olga", deliveries[0]["id"], "merchant lost it")
        assert row.after["delivery"] == again["id"]
    with pytest.raises(NotFound):
        webhook_admin.redeliver("whd_nothing", "olga")


def test_dashboard_figures(clean, client, configured):
    shop, _ = builders.merchant()
    now = utcnow().replace(minute=30, second=0, microsecond=0)  # "5 minutes ago" is in this hour's bucket
    for status, channel, code in [("succeeded", "acq_alpha", None), ("succeeded", "acq_alpha", None),
                                  ("failed", "acq_alpha", "card_declined"), ("processing", "acq_alpha", None),
                                  ("failed", "acq_beta", "card_declined"), ("failed", "acq_beta", "do_not_honor")]:
        add_operation(shop, at=now - timedelta(minutes=5), status=status, channel=channel, failure_code=code)
    add_operation(shop, at=now - timedelta(hours=30), status="failed", failure_code="old_code")  # outside 24 h
    add_operation(shop, at=now - timedelta(hours=3))
    open_issue()
    open_issue("acq_beta")
    reconciliation_admin.resolve(open_issue(), "fine", "olga")

    figures = dashboard.data(now)
    assert len(figures["hours"]) == 24 and figures["hours"][-1] == now.strftime("%Y-%m-%d %H")
    by_channel = {c["channel"]: c for c in figures["channels"]}
    alpha, beta = by_channel["acq_alpha"], by_channel["acq_beta"]
    assert alpha["total"] == 5 and alpha["volume"][-1] == 4 and alpha["total_success_rate"] == 75.0
    assert alpha["success_rate"][-1] == pytest.approx(66.7)
    assert beta["total"] == 2 and beta["total_success_rate"] == 0.0
    assert figures["declines"] == [{"code": "card_declined", "count": 2}, {"code": "do_not_honor", "count": 1}]
    assert figures["open_issues"] == 2 and {i["channel"] for i in figures["issues"]} == {"acq_alpha", "acq_beta"}
    assert figures["webhooks"]["pending"] == 0

    from app.services.webhooks import relay

    api = builders.api(configured(webhook_config(clean)).test_client())  # an endpoint on a private address
    create_endpoint(api, "http://127.0.0.1:9/hooks")
    make_transfer(api)
    relay.relay_events()  # a delivery is made and waits (no worker runs here)
    with unit_of_work() as session:
        pending = session.scalars(select(WebhookDelivery).where(WebhookDelivery.status == "pending")).all()
    assert dashboard.data()["webhooks"]["pending"] == len(pending) == 1
