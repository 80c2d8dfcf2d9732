"""The "Switches" and "Channels" pages without a browser (Flask test client): every switch and
channel in words, ops and admin change them with a reason (audited, obeyed by routing), viewer and
pm read but get 403 on acting, a form without its CSRF token is refused."""
from __future__ import annotations

from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import AuditLog
from app.services import breaker, switches
from tests import builders
from tests.integration.test_admin_console import logged_in


def audit(action: str) -> list[AuditLog]:
    with unit_of_work() as session:
        return list(session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


def test_switches_page_in_words_with_reasoned_changes_and_history(app):
    ops, name, csrf = logged_in(app, "ops")
    page = ops.get("/admin/switches/").get_data(as_text=True)
    for words in ("Channel acq_alpha: enabled", "Operation withdrawal: running", "Webhooks: running",
                  "Read-only mode: off", ">Disable<", ">Pause<", ">Turn on<", "No switch was ever changed."):
        assert words in page, words
    refused = ops.post("/admin/switches/change", data={"csrf_token": csrf, "name": "channel:acq_alpha", "on": "1",
                                                       "reason": ""}, follow_redirects=True)
    assert "A change needs a reason." in refused.get_data(as_text=True) and not switches.is_on("channel:acq_alpha")
    done = ops.post("/admin/switches/change", data={"csrf_token": csrf, "name": "channel:acq_alpha", "on": "1",
                                                    "reason": "acquirer outage"}, follow_redirects=True)
    body = done.get_data(as_text=True)
    assert done.status_code == 200 and switches.is_on("channel:acq_alpha")
    assert "Channel acq_alpha: disabled since" in body and f"by {name}, because acquirer outage" in body
    assert ">Enable<" in body and f"{name} disabled channel acq_alpha, because acquirer outage" in body
    ops.post("/admin/switches/change", data={"csrf_token": csrf, "name": "operation:withdrawal", "on": "1",
                                             "reason": "bank holiday"})
    assert switches.is_on("operation:withdrawal")
    only = ops.get("/admin/switches/?name=channel:acq_alpha").get_data(as_text=True)
    assert "disabled channel acq_alpha" in only and "paused operation withdrawal" not in only
    rows = audit("switch.set")
    assert [(r.actor, r.target, r.reason) for r in rows] == [(name, "channel:acq_alpha", "acquirer outage"),
                                                             (name, "operation:withdrawal", "bank holiday")]
    assert rows[0].before is None and rows[0].after["on"] is True


def test_channels_page_shows_state_and_numbers_and_opens_and_closes_circuits(app):
    api = builders.api(app.test_client())
    ops, name, csrf = logged_in(app, "admin")
    page = ops.get("/admin/channels/").get_data(as_text=True)
    for words in ("acq_alpha", "acq_beta", "sandbox", "Success rate", "p95 latency", "Volume", ">Open circuit<"):
        assert words in page, words
    done = ops.post("/admin/channels/circuit", data={"csrf_token": csrf, "channel": "acq_alpha", "action": "open",
                                                     "reason": "acquirer says down"}, follow_redirects=True)
    body = done.get_data(as_text=True)
    assert "Circuit of acq_alpha: open by hand since" in body and ">Close circuit<" in body
    assert breaker.state("acq_alpha") == "open"
    decision = api.post("/v1/routing/simulate", builders.payment_body(100_000)).get_json()
    assert decision["dropped"] == [{"channel": "acq_alpha", "reason": "circuit_open"}]
    ops.post("/admin/channels/circuit", data={"csrf_token": csrf, "channel": "acq_alpha", "action": "close",
                                              "reason": "acquirer back"})
    assert breaker.state("acq_alpha") == "closed"
    assert [(r.actor, r.action, r.reason) for r in audit("circuit.open") + audit("circuit.close")] == [
        (name, "circuit.open", "acquirer says down"), (name, "circuit.close", "acquirer back")]


def test_viewer_and_pm_read_but_may_not_act(app):
    for role in ("viewer", "pm"):
        client, _, csrf = logged_in(app, role)
        assert client.get("/admin/switches/").status_code == 200
        page = client.get("/admin/channels/")
        assert page.status_code == 200 and "Open circuit" not in page.get_data(as_text=True)
        assert "Disable<" not in client.get("/admin/switches/").get_data(as_text=True)
        assert client.post("/admin/switches/change", data={"csrf_token": csrf, "name": "webhooks", "on": "1",
                                                           "reason": "x"}).status_code == 403
        assert client.post("/admin/channels/circuit", data={"csrf_token": csrf, "channel": "acq_alpha",
                                                            "action": "open", "reason": "x"}).status_code == 403
    assert not switches.is_on("webhooks") and breaker.state("acq_alpha") == "closed"
    assert audit("switch.set") == [] and audit("circuit.open") == []


def test_a_change_without_its_csrf_token_is_refused(app):
    ops, _, _ = logged_in(app, "ops")
    assert ops.post("/admin/switches/change", data={"name": "webhooks", "on": "1", "reason": "x"}).status_code == 400
    assert ops.post("/admin/channels/circuit", data={"channel": "acq_alpha", "action": "open",
                                                     "reason": "x"}).status_code == 400
    assert not switches.is_on("webhooks") and breaker.state("acq_alpha") == "closed"
