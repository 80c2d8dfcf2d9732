"""Journeys on "Transactions", "Reconciliation" and "Webhooks": search a payment by reference and
read its timeline; resolve a reconciliation issue with a note; redeliver a webhook (the worker
sends it again); each change in the Audit log."""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from app.adapters.db import unit_of_work
from app.services import issues
from tests.builders import payment_body, unique
from tests.webhook_support import Receiver


@pytest.fixture
def hooks():
    receiver = Receiver()
    yield receiver
    receiver.close()


def wait_for(predicate, seconds: float = 10.0, what: str = "it"):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.1)


def test_search_a_payment_by_reference_and_read_its_timeline(live, page, login, hooks):
    api = live.api()
    assert api.post("/v1/webhook_endpoints", {"url": hooks.url, "enabled_events": ["*"]}).status_code == 201
    body = payment_body(2000)  # the sandbox: succeeded at once
    paid = api.post("/v1/payments", body).json()
    assert paid["status"] == "succeeded", paid
    wait_for(lambda: hooks.requests, what="the payment.succeeded webhook")
    login(page, "viewer")
    page.get_by_role("link", name="Transactions", exact=True).click()
    page.get_by_label("Reference").fill(body["reference"])
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tr.transaction-row")
    expect(rows).to_have_count(1)
    rows.first.get_by_role("link", name=paid["id"]).click()
    expect(page.locator("#operation-title")).to_contain_text(paid["id"])
    expect(page.locator("#decision-route")).to_contain_text("sandbox")
    expect(page.locator("#decision-fee")).to_contain_text("0.60 USD")  # 3 % of 20.00 USD, by the rule named there
    expect(page.locator("#decision-fee")).to_contain_text("3.0% of 20.00 USD")
    expect(page.locator("#operation-amount")).to_have_text("20.00 USD")
    timeline = page.locator("#timeline")
    for kind in ("decision", "attempt", "ledger", "event", "webhook"):
        expect(timeline.locator(f"tr.timeline-entry[data-type='{kind}']").first).to_be_visible()
    expect(page.locator(".redeliver-form")).to_have_count(0)  # a viewer reads, does not act


def test_ops_resolve_a_reconciliation_issue_with_a_note(live, page, login):
    found = [{"issue": "status_mismatch", "channel_reference": unique("ch"),
              "ours": {"id": "pay_x", "status": "failed"}, "theirs": {"status": "succeeded"}}]
    with unit_of_work() as session:
        issues.record(session, "sandbox", found)
    issue = found[0]["id"]
    name = login(page, "ops")
    page.get_by_role("link", name="Reconciliation", exact=True).click()
    row = page.locator(f"tr.issue-row[data-id='{issue}']")
    expect(row.locator(".issue-status")).to_have_text("open")
    row.get_by_label("Note").fill("the channel refunded it; nothing owed")
    row.get_by_role("button", name="Resolve").click()
    expect(page.locator(f"tr.issue-row[data-id='{issue}']")).to_have_count(0)  # no longer open
    page.get_by_label("Issues", exact=True).select_option("resolved")
    page.get_by_role("button", name="Filter").click()
    resolved = page.locator(f"tr.issue-row[data-id='{issue}'] .issue-status")
    expect(resolved).to_contain_text(f"by {name}")
    expect(resolved).to_contain_text("the channel refunded it; nothing owed")
    page.get_by_role("link", name="Audit log", exact=True).click()
    entry = page.locator(f"tr.audit-entry[data-action='reconciliation.resolve'][data-object='{issue}']")
    expect(entry).to_contain_text(name)


def test_ops_redeliver_a_webhook(live, page, login, hooks):
    api = live.api()
    endpoint = api.post("/v1/webhook_endpoints", {"url": hooks.url, "enabled_events": ["*"]}).json()
    source = api.post("/v1/accounts", {"currency": "USD", "customer": {"id": unique("cus")}}).json()
    target = api.post("/v1/accounts", {"currency": "USD", "customer": {"id": unique("cus")}}).json()
    from tests.builders import fund

    fund(api.merchant_id, source["id"], 1000)
    moved = api.post("/v1/transfers", {"from_account": source["id"], "to_account": target["id"], "amount": 100,
                                       "currency": "USD", "reference": unique("tr")})
    assert moved.status_code == 201, moved.text
    wait_for(lambda: len(hooks.requests) == 1, what="the transfer.succeeded webhook")
    name = login(page, "ops")
    page.get_by_role("link", name="Webhooks", exact=True).click()
    page.get_by_label("Endpoint", exact=True).fill(endpoint["id"])
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tr.delivery-row")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".delivery-status")).to_have_text("succeeded")
    first = rows.first.get_attribute("data-id")
    rows.first.get_by_role("button", name="Redeliver").click()
    expect(page.get_by_text(f"of {first} queued")).to_be_visible()
    wait_for(lambda: len(hooks.requests) == 2, what="the redelivery")
    assert hooks.requests[0]["body"] == hooks.requests[1]["body"]
    page.reload()
    expect(page.locator("tr.delivery-row")).to_have_count(2)
    page.get_by_role("link", name="Audit log", exact=True).click()
    expect(page.locator(f"tr.audit-entry[data-action='webhook.redeliver'][data-object='{first}']")).to_contain_text(
        name)


def test_the_dashboard_draws_its_charts_from_the_app_alone(live, page, login):
    requested, errors = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    login(page, "viewer")
    page.get_by_role("link", name="Dashboard", exact=True).click()
    page.wait_for_function("window.payrouterCharts && Object.keys(window.payrouterCharts).length === 5")
    assert page.evaluate("window.payrouterCharts['chart-volume'].data.labels.length") == 24
    assert not errors, errors
    assert requested and all(url.startswith(live.url) for url in requested), [
        url for url in requested if not url.startswith(live.url)]
