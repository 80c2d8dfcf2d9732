"""Customer actions (contract §1, §4 row 57): a payment that needs the customer's step answers
requires_action with next_action; the sandbox's page approves or declines it and posts the callback;
an abandoned one can be canceled. Through the public API with the sandbox over HTTP."""
import re

import requests
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import Event, JournalEntry
from tests import builders
from tests.support import wait_until


def events_of(object_id: str) -> list[str]:
    with unit_of_work() as session:
        return list(session.scalars(select(Event.type).where(Event.object_id == object_id)
                                    .order_by(Event.created_at, Event.id)))


def ledger_kinds(object_id: str) -> list[str]:
    with unit_of_work() as session:
        return sorted(session.scalars(select(JournalEntry.kind).where(JournalEntry.source_id == object_id)))


def needs_action(api, amount: int = 2057, **fields) -> dict:
    response = api.post("/v1/payments", builders.payment_body(amount, **fields))
    assert response.status_code == 201, response.get_json()
    payment = response.get_json()
    assert payment["status"] == "requires_action", payment
    return payment


def settled(stack, api, payment_id: str, status: str) -> dict:
    def reached():
        stack.work()  # the sandbox's callback, drained
        found = api.get(f"/v1/payments/{payment_id}").get_json()
        return found if found["status"] == status else None

    return wait_until(reached, timeout=15, what=f"{payment_id} {status}")


def press(page_url: str, button: str) -> requests.Response:
    """What the customer's browser does: read the page, post the button's form."""
    page = requests.get(page_url, timeout=10)
    assert page.status_code == 200 and f">{button}</button>" in page.text, page.text
    action = re.search(rf'<form method="post" action="([^"]+)"><button type="submit" id="{button.lower()}"',
                       page.text).group(1)
    return requests.post(requests.compat.urljoin(page_url, action), timeout=10)


def test_57_requires_action_with_a_redirect_and_approval_settles_it(stack):
    api = builders.api(stack.client)
    payment = needs_action(api)
    action = payment["next_action"]
    assert action["type"] == "redirect_to_url" and action["url"].startswith(stack.sandbox_url + "/actions/")
    assert payment["fee"] == 3 * 2057 // 100 + 1  # quoted, charged only on success
    assert payment["attempts"] == [{"channel": "sandbox", "status": "processing"}]
    assert events_of(payment["id"]) == ["payment.requires_action"]
    assert ledger_kinds(payment["id"]) == []
    assert press(action["url"], "Approve").status_code == 200
    paid = settled(stack, api, payment["id"], "succeeded")
    assert paid["next_action"] is None and paid["amount_captured"] == 2057
    assert paid["attempts"] == [{"channel": "sandbox", "status": "succeeded"}]
    assert events_of(payment["id"]) == ["payment.requires_action", "payment.succeeded"]
    assert ledger_kinds(payment["id"]) == ["payment"]
    again = requests.get(action["url"], timeout=10)
    assert "Approve" not in again.text and "succeeded" in again.text  # the page is spent


def test_a_declined_action_fails_the_payment(stack):
    api = builders.api(stack.client)
    payment = needs_action(api)
    assert press(payment["next_action"]["url"], "Decline").status_code == 200
    failed = settled(stack, api, payment["id"], "failed")
    assert failed["failure_code"] == "authentication_failed" and failed["fee"] == 0
    assert failed["attempts"] == [{"channel": "sandbox", "status": "failed", "error_code": "authentication_failed"}]
    assert events_of(payment["id"]) == ["payment.requires_action", "payment.failed"]
    assert ledger_kinds(payment["id"]) == []


def test_an_approved_action_with_manual_capture_waits_for_its_capture(stack):
    api = builders.api(stack.client)
    payment = needs_action(api, capture_method="manual")
    press(payment["next_action"]["url"], "Approve")
    authorized = settled(stack, api, payment["id"], "requires_capture")
    assert ledger_kinds(payment["id"]) == []
    captured = api.post(f"/v1/payments/{authorized['id']}/capture", {}).get_json()
    assert captured["status"] == "succeeded" and ledger_kinds(payment["id"]) == ["payment"]
    assert events_of(payment["id"]) == ["payment.requires_action", "payment.requires_capture", "payment.succeeded"]


def test_an_abandoned_action_is_canceled_and_its_page_refuses_a_late_approval(stack):
    api = builders.api(stack.client)
    payment = needs_action(api)
    response = api.post(f"/v1/payments/{payment['id']}/cancel", {"reason": "abandoned"})
    assert response.status_code == 200, response.get_json()
    canceled = response.get_json()
    assert canceled["status"] == "canceled" and canceled["cancellation_reason"] == "abandoned"
    assert canceled["next_action"] is None and canceled["fee"] == 0
    assert canceled["attempts"] == [{"channel": "sandbox", "status": "canceled"}]
    page = requests.get(payment["next_action"]["url"], timeout=10)
    assert "Approve" not in page.text and "canceled" in page.text
    late = requests.post(payment["next_action"]["url"] + "/approve", timeout=10)
    assert late.status_code == 409
    stack.work()
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "canceled"
    assert events_of(payment["id"]) == ["payment.requires_action", "payment.canceled"]
    assert ledger_kinds(payment["id"]) == []


def test_capture_of_a_payment_that_requires_action_is_409(stack):
    api = builders.api(stack.client)
    payment = needs_action(api)
    response = api.post(f"/v1/payments/{payment['id']}/capture", {})
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "payment_not_capturable"


def test_a_lost_approval_callback_is_learned_by_status_query(stack):
    api = builders.api(stack.client)
    payment = needs_action(api)
    stack.sandbox.psp.sender.stopped.set()  # the approval's callback never leaves the sandbox
    press(payment["next_action"]["url"], "Approve")
    paid = settled(stack, api, payment["id"], "succeeded")
    assert events_of(paid["id"]) == ["payment.requires_action", "payment.succeeded"]


def test_57_is_a_payments_outcome_other_operations_succeed(stack):
    api = builders.api(stack.client)
    account = api.account()
    topup = api.post("/v1/topups", {"account": account["id"], "amount": 3057, "currency": "USD",
                                    "payment_method": {"type": "card", "brand": "visa", "country": "US",
                                                       "last4": "4242"}, "reference": builders.unique("top")})
    assert topup.status_code == 201 and topup.get_json()["status"] == "succeeded", topup.get_json()
    paid = api.post("/v1/payments", builders.payment_body(5000)).get_json()
    refund = api.post("/v1/refunds", {"payment": paid["id"], "amount": 1057, "reference": builders.unique("re")})
    assert refund.status_code == 201 and refund.get_json()["status"] == "succeeded", refund.get_json()
