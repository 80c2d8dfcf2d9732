"""3-D Secure in a real browser: a payment that requires the customer's action (sandbox row 57)
is approved by clicking "Approve" on the page its next_action names, in headless Chromium; the
sandbox posts the callback, the worker settles the payment, and its events and ledger follow."""
from __future__ import annotations

from playwright.sync_api import expect
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import Event, JournalEntry
from tests.builders import payment_body
from tests.support import wait_until


def test_the_customer_approves_in_the_browser_and_the_payment_succeeds(live, page):
    api = live.api()
    payment = api.post("/v1/payments", payment_body(4057)).json()
    assert payment["status"] == "requires_action", payment
    assert payment["next_action"]["type"] == "redirect_to_url"

    page.goto(payment["next_action"]["url"])  # the redirect the merchant's checkout makes
    expect(page.get_by_role("heading", name="Confirm your payment")).to_be_visible()
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#status")).to_have_text("Payment succeeded.")

    def succeeded():  # the callback, applied by the live stack's worker
        found = api.get(f"/v1/payments/{payment['id']}").json()
        return found if found["status"] == "succeeded" else None

    paid = wait_until(succeeded, timeout=15, what="the approved payment succeeded")
    assert paid["next_action"] is None and paid["amount_captured"] == 4057
    with unit_of_work() as session:
        events = list(session.scalars(select(Event.type).where(Event.object_id == payment["id"])
                                      .order_by(Event.created_at, Event.id)))
        entries = list(session.scalars(select(JournalEntry.kind).where(JournalEntry.source_id == payment["id"])))
    assert events == ["payment.requires_action", "payment.succeeded"]
    assert entries == ["payment"]

    page.goto(payment["next_action"]["url"])  # a second visit cannot approve again
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
