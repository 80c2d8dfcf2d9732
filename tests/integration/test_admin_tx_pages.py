"""The "Transactions", "Reconciliation", "Webhooks" and "Dashboard" pages through the Flask test
client: every role reads them; Resolve and Redeliver need ops (or admin), 403 otherwise; a form
without its CSRF token is refused; a resolution needs a note; the charts' library is served by the app."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import AuditLog, utcnow
from app.adapters.webhook_models import WebhookDelivery
from app.services import admin_users, reconciliation_admin, webhook_admin
from tests import builders
from tests.integration.test_admin_data import add_operation, open_issue
from tests.webhook_support import create_endpoint, pump
from tests.webhook_support import transfer as make_transfer

PASSWORD = "correct horse battery"


def _token(page: str) -> str:
    return re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)


class Console:
    def __init__(self, app, role: str):
        self.client = app.test_client()
        self.name = builders.unique(role)
        admin_users.create_user(self.name, PASSWORD, role, actor="test")
        page = self.client.get("/admin/login/").get_data(as_text=True)
        answer = self.client.post("/admin/login/", data={"username": self.name, "password": PASSWORD,
                                                        "csrf_token": _token(page)})
        assert answer.status_code == 302, answer.get_data(as_text=True)

    def text(self, path: str) -> str:
        answer = self.client.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        return answer.get_data(as_text=True)

    def post(self, path: str, **form):
        token = _token(self.text("/admin/reconciliation/"))
        return self.client.post(path, data={"csrf_token": token, **form})


def test_search_and_an_operation_page_for_a_viewer(app):
    shop, _ = builders.merchant()
    op = add_operation(shop, at=utcnow() - timedelta(minutes=3), reference="order-42", customer="cus_9")
    add_operation(shop, at=utcnow() - timedelta(minutes=2), reference="order-43")
    viewer = Console(app, "viewer")
    page = viewer.text("/admin/transactions/?reference=order-42")
    assert f'data-id="{op}"' in page and "order-43" not in page
    assert f'data-id="{op}"' in viewer.text("/admin/transactions/?customer=cus_9&status=succeeded")
    assert 'id="search-error"' in viewer.text("/admin/transactions/?status=lost")
    held = add_operation(shop, at=utcnow() - timedelta(minutes=1), status="requires_capture", order="ord_page1")
    page = viewer.text("/admin/transactions/?order=ord_page1&status=requires_capture")
    assert f'data-id="{held}"' in page and f'data-id="{op}"' not in page and 'id="search-error"' not in page
    assert 'name="order" value="ord_page1"' in page and '<option value="requires_capture" selected>' in page
    story = viewer.text(f"/admin/transactions/{op}")
    assert 'id="decision"' in story and 'data-type="decision"' in story and "order-42" in story
    assert viewer.client.get("/admin/transactions/pay_missing").status_code == 404


def test_resolve_needs_ops_a_note_and_the_csrf_token(app):
    issue = open_issue()
    viewer, ops = Console(app, "viewer"), Console(app, "ops")
    assert "resolve-form" not in viewer.text("/admin/reconciliation/")
    assert viewer.post("/admin/reconciliation/resolve", issue=issue, note="no").status_code == 403
    assert ops.client.post("/admin/reconciliation/resolve", data={"issue": issue, "note": "x"}).status_code == 400
    assert ops.post("/admin/reconciliation/resolve", issue=issue, note="  ").status_code == 302
    assert [i["id"] for i in reconciliation_admin.issue_list()[0]] == [issue]  # still open: no note
    page = ops.text("/admin/reconciliation/")
    assert f'data-id="{issue}"' in page and "resolve-form" in page
    assert ops.post("/admin/reconciliation/resolve", issue=issue, note="paid by hand").status_code == 302
    assert reconciliation_admin.issue_list()[0] == []
    resolved = ops.text("/admin/reconciliation/?status=resolved")
    assert f"by {ops.name}" in resolved and "paid by hand" in resolved


def test_issues_filter_by_class(app):
    status, fee = open_issue(), open_issue("acq_beta", "fee_mismatch")
    viewer = Console(app, "viewer")
    page = viewer.text("/admin/reconciliation/?kind=fee_mismatch")
    assert f'data-id="{fee}"' in page and f'data-id="{status}"' not in page
    assert '<option value="fee_mismatch" selected>' in page and 'value="amount_mismatch"' in page
    both = viewer.text("/admin/reconciliation/?kind=")
    assert f'data-id="{fee}"' in both and f'data-id="{status}"' in both
    refused = viewer.client.get("/admin/reconciliation/?kind=nonsense", follow_redirects=True)
    assert "kind is one of" in refused.get_data(as_text=True)


@pytest.mark.parametrize("role,allowed", [("viewer", False), ("pm", False), ("ops", True), ("admin", True)])
def test_redeliver_needs_ops(wh_app, receiver, role, allowed):
    app = wh_app
    hooks = receiver()
    api = builders.api(app.test_client())
    endpoint = create_endpoint(api, hooks.url)
    moved, _ = make_transfer(api)
    pump()
    console = Console(app, role)
    page = console.text(f"/admin/webhooks/?endpoint={endpoint['id']}")
    delivery = webhook_admin.list_deliveries(endpoint=endpoint["id"])[0][0]["id"]
    assert f'data-id="{delivery}"' in page and ("redeliver-form" in page) == allowed
    answer = console.post("/admin/webhooks/redeliver", delivery=delivery)
    assert answer.status_code == (302 if allowed else 403)
    pump()
    assert len(hooks.requests) == (2 if allowed else 1)
    with unit_of_work() as session:
        audited = session.scalars(select(AuditLog).where(AuditLog.action == "webhook.redeliver")).all()
        count = session.scalars(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint["id"])).all()
    assert [a.actor for a in audited] == ([console.name] if allowed else [])
    assert len(count) == (2 if allowed else 1)
    story = console.text(f"/admin/transactions/{moved['id']}")
    assert ("redeliver-form" in story) == allowed and 'data-type="webhook"' in story


def test_dashboard_draws_with_the_vendored_library(app):
    shop, _ = builders.merchant()
    add_operation(shop, at=utcnow() - timedelta(minutes=1), status="failed", failure_code="card_declined")
    open_issue()
    viewer = Console(app, "viewer")
    page = viewer.text("/admin/")
    assert 'id="chart-volume"' in page and 'id="chart-declines"' in page and "card_declined" in page
    assert '<span id="open-issues">1</span>' in page
    assert "/admin/assets/vendor/chartjs/chart.umd.min.js" in page
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)  # nothing loaded from another host
    library = viewer.client.get("/admin/assets/vendor/chartjs/chart.umd.min.js")
    assert library.status_code == 200 and b"Chart.js v4" in library.data and b"MIT" in library.data
    assert viewer.client.get("/admin/assets/dashboard.js").status_code == 200
