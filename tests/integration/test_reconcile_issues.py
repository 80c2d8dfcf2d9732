"""Reconciliation correctness (contract §4): status both ways, fees against the channel's cost,
issues resolved with a note, and the exit status cron and alerting key on (0 / 3 / 1)."""
import dataclasses
import datetime as dt
import json
from decimal import Decimal

from click.testing import CliRunner
from sqlalchemy import select, update

from app.adapters.db import unit_of_work
from app.adapters.models import AuditLog, Operation, ReconciliationIssue
from app.entrypoints.cli import main
from tests import builders


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def reconcile_today(*extra):
    return CliRunner().invoke(main, ["reconcile", "--channel", "sandbox", "--date", today(), "--json", *extra])


def kinds(report: dict) -> list[tuple[str, str | None]]:
    return sorted((i["issue"], (i.get("ours") or {}).get("id")) for i in report["issues"])


def test_ours_failed_theirs_succeeded_is_a_status_mismatch_and_the_reverse(stack):
    api = builders.api(stack.client)
    paid = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    declined = api.post("/v1/payments", builders.payment_body(2051)).get_json()
    assert (paid["status"], declined["status"]) == ("succeeded", "failed")
    with unit_of_work() as session:  # what the merchant sees now disagrees with the channel, both ways
        session.execute(update(Operation).where(Operation.id == paid["id"]).values(status="failed"))
        session.execute(update(Operation).where(Operation.id == declined["id"]).values(status="succeeded"))
    result = reconcile_today()
    assert result.exit_code == 3, result.output
    report = json.loads(result.output)
    assert kinds(report) == sorted([("status_mismatch", paid["id"]), ("status_mismatch", declined["id"])])
    assert report["matched"] == 0
    mismatch = next(i for i in report["issues"] if i["ours"]["id"] == paid["id"])
    assert (mismatch["ours"]["status"], mismatch["theirs"]["status"]) == ("failed", "succeeded")


def test_a_fee_other_than_the_channels_cost_is_a_fee_mismatch(stack, monkeypatch):
    from app.adapters.channels_runtime import channel
    from channels.config import Cost

    api = builders.api(stack.client)
    paid = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    declined = api.post("/v1/payments", builders.payment_body(2051)).get_json()
    assert reconcile_today().exit_code == 0  # the sandbox charges what the channels file says
    adapter = channel("sandbox")  # now we expect 3.0 % + 10 where the sandbox charges 2.0 % + 10
    monkeypatch.setattr(adapter, "spec", dataclasses.replace(adapter.spec, cost=Cost(Decimal("3.0"), 10)))
    result = reconcile_today()
    assert result.exit_code == 3, result.output
    report = json.loads(result.output)
    [issue] = report["issues"]  # the declined line carries no fee, as the cost says
    assert (issue["issue"], issue["ours"]["id"]) == ("fee_mismatch", paid["id"])
    assert (issue["theirs"]["fee"], issue["expected_fee"]) == (50, 70)
    assert report["matched"] == 1 and declined["status"] == "failed"


def test_issues_are_resolved_with_a_note_once_and_the_exit_status_is_0_3_or_1(stack):
    api = builders.api(stack.client)
    error = CliRunner().invoke(main, ["reconcile", "--channel", "nope", "--date", today()])
    assert error.exit_code == 1 and "nope" in error.output
    paid = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    clean = reconcile_today()
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.output)["open_issues"] == 0
    with unit_of_work() as session:
        session.execute(update(Operation).where(Operation.id == paid["id"]).values(status="failed"))
    found = reconcile_today()
    assert found.exit_code == 3
    [issue] = json.loads(found.output)["issues"]
    assert issue["status"] == "open" and issue["id"].startswith("ri_")
    listed = CliRunner().invoke(main, ["reconcile", "issues", "--json"])
    assert [i["id"] for i in json.loads(listed.output)] == [issue["id"]]

    resolved = CliRunner().invoke(main, ["reconcile", "resolve", issue["id"], "--note", "refunded by hand",
                                         "--actor", "alice", "--json"])
    assert resolved.exit_code == 0, resolved.output
    shown = json.loads(resolved.output)
    assert (shown["status"], shown["resolved_by"], shown["note"]) == ("resolved", "cli:alice", "refunded by hand")
    with unit_of_work() as session:
        row = session.get(ReconciliationIssue, issue["id"])
        assert (row.status, row.resolved_by, row.resolution_note) == ("resolved", "cli:alice", "refunded by hand")
        assert row.resolved_at is not None
        audit = session.scalars(select(AuditLog).where(AuditLog.target == issue["id"])).one()
        assert (audit.action, audit.reason) == ("reconciliation.resolve", "refunded by hand")

    again = CliRunner().invoke(main, ["reconcile", "resolve", issue["id"], "--note", "twice"])
    assert again.exit_code == 1 and "already resolved" in again.output
    unknown = CliRunner().invoke(main, ["reconcile", "resolve", "ri_nope", "--note", "x"])
    assert unknown.exit_code == 1 and "No such reconciliation issue" in unknown.output
    assert CliRunner().invoke(main, ["reconcile", "resolve", issue["id"], "--note", " "]).exit_code == 1
    assert CliRunner().invoke(main, ["reconcile", "resolve", issue["id"]]).exit_code != 0  # --note is required

    # Found again by the next run, it is the same issue, and it stays resolved: the run is clean.
    rerun = reconcile_today()
    assert rerun.exit_code == 0, rerun.output
    report = json.loads(rerun.output)
    assert [(i["id"], i["status"]) for i in report["issues"]] == [(issue["id"], "resolved")]
    assert CliRunner().invoke(main, ["reconcile", "issues", "--json"]).output.strip() == "[]"


def test_a_pending_issue_closes_when_the_operation_settles_as_the_statement_says(stack):
    import time

    from app.services import reconcile as recon

    api = builders.api(stack.client)
    lost = api.post("/v1/payments", builders.payment_body(2054)).get_json()  # timed out; the channel settles
    time.sleep(1.0)
    run = recon.reconcile("sandbox", dt.datetime.now(dt.timezone.utc).date())
    [issue] = run.issues
    assert (issue["issue"], issue["status"]) == ("pending_in_payrouter", "open")
    stack.work()  # the status query the run queued settles it
    assert api.get(f"/v1/payments/{lost['id']}").get_json()["status"] == "succeeded"
    with unit_of_work() as session:
        row = session.get(ReconciliationIssue, issue["id"])
        assert (row.status, row.resolved_by) == ("resolved", "channel:sandbox")
    assert reconcile_today().exit_code == 0


def test_a_pending_issue_also_closes_when_a_callback_settled_the_operation_first(stack):
    import time

    from app.adapters.channels_runtime import channel
    from app.services import callbacks
    from app.services import reconcile as recon

    api = builders.api(stack.client)
    lost = api.post("/v1/payments", builders.payment_body(2054)).get_json()
    time.sleep(1.0)
    [issue] = recon.reconcile("sandbox", dt.datetime.now(dt.timezone.utc).date()).issues
    reference = channel("sandbox").query(lost["id"]).channel_reference
    body, headers = builders.signed_callback(channel("sandbox"), lost["id"], "succeeded", reference)
    callbacks.receive("sandbox", headers, body)
    callbacks.drain()  # settled before the status query the run queued is carried out
    assert api.get(f"/v1/payments/{lost['id']}").get_json()["status"] == "succeeded"
    stack.work()  # that query finds it final, as the statement says
    with unit_of_work() as session:
        assert session.get(ReconciliationIssue, issue["id"]).status == "resolved"
