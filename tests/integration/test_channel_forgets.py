"""A PSP that forgets an operation it acknowledged (contract §1): a status query answered
"unknown operation" leaves it processing, flagged ``review: true``, with a reconciliation
issue, until the channel (a later callback or answer) or an operator settles it."""
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import ChannelCallback, Operation, ReconciliationIssue
from app.services import callbacks
from tests import builders
from tests.support import wait_until


def forget(stack, channel_reference: str) -> None:
    """The sandbox loses its record of an operation: its status queries answer 404 from now on."""
    store = stack.sandbox.psp.store
    with store.lock:
        store._ops.pop(channel_reference)


def issues_of(operation_id: str) -> list[ReconciliationIssue]:
    with unit_of_work() as session:
        return list(session.scalars(select(ReconciliationIssue)
                                    .where(ReconciliationIssue.operation_id == operation_id)))


def wait_for_callback(operation_id: str, timeout: float = 10.0) -> None:
    def called_back() -> bool:
        with unit_of_work() as session:
            found = session.scalars(select(ChannelCallback).where(ChannelCallback.reference == operation_id)).first()
        return found is not None

    wait_until(called_back, timeout, what=f"a callback for {operation_id}")


def test_an_acknowledged_operation_the_channel_forgot_stays_processing_for_review(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(2052)).get_json()  # processing; callback later
    assert payment["status"] == "processing" and payment["review"] is False
    with unit_of_work() as session:
        reference = session.get(Operation, payment["id"]).channel_reference
    forget(stack, reference)
    assert callbacks.query_status(payment["id"]) == "review"
    shown = api.get(f"/v1/payments/{payment['id']}").get_json()
    assert (shown["status"], shown["review"], shown["failure_code"]) == ("processing", True, None)
    [issue] = issues_of(payment["id"])
    assert (issue.kind, issue.status, issue.channel, issue.channel_reference) == (
        "unknown_at_channel", "open", "sandbox", reference)
    assert callbacks.query_status(payment["id"]) == "review"  # asked again: still one issue
    assert len(issues_of(payment["id"])) == 1
    # The channel's succeeded callback (sent before it forgot) still settles it, and closes the issue.
    wait_for_callback(payment["id"])
    settled = stack.settle(api, f"/v1/payments/{payment['id']}")
    assert (settled["status"], settled["review"]) == ("succeeded", False)
    [issue] = issues_of(payment["id"])
    assert (issue.status, issue.resolved_by) == ("resolved", "channel:sandbox")


def test_under_review_it_is_asked_until_the_schedule_ends_then_left_alone(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(2052)).get_json()
    with unit_of_work() as session:
        reference = session.get(Operation, payment["id"]).channel_reference
    forget(stack, reference)
    schedule = len(stack.config.status_query_delays)
    for _ in range(schedule):
        assert callbacks.query_status(payment["id"]) == "review"
    with unit_of_work() as session:
        op = session.get(Operation, payment["id"])
        assert (op.status, op.review, op.query_count, op.next_query_at) == ("processing", True, schedule, None)


def test_reconciliation_reports_the_operation_under_review(stack):
    import datetime as dt

    from app.services import reconcile as recon

    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(2052)).get_json()
    with unit_of_work() as session:
        reference = session.get(Operation, payment["id"]).channel_reference
    forget(stack, reference)
    callbacks.query_status(payment["id"])
    run = recon.reconcile("sandbox", dt.datetime.now(dt.timezone.utc).date())
    assert [(i["issue"], i["ours"]["id"]) for i in run.issues] == [("unknown_at_channel", payment["id"])]
    assert run.issues[0]["id"] == issues_of(payment["id"])[0].id  # the same issue, not a second one


def test_an_operation_the_channel_never_acknowledged_still_fails_not_found(stack, monkeypatch):
    """A timeout left no reference: "unknown operation" then means the charge never arrived."""
    from app.adapters.channels_runtime import channel
    from channels.base import ChannelTimeout

    def lost(request):
        raise ChannelTimeout("no answer")

    monkeypatch.setattr(channel("sandbox"), "charge", lost)
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    monkeypatch.undo()
    assert callbacks.query_status(payment["id"]) == "failed"
    shown = api.get(f"/v1/payments/{payment['id']}").get_json()
    assert (shown["status"], shown["failure_code"], shown["review"], shown["fee"]) == ("failed", "not_found", False, 0)
    assert issues_of(payment["id"]) == []


def test_an_operator_settles_it_by_resolving_its_issue(stack):
    from click.testing import CliRunner

    from app.entrypoints.cli import main

    api = builders.api(stack.client)
    account = api.account(funded=10_000)
    body = {"account": account["id"], "amount": 3052, "currency": "USD",
            "destination": {"type": "bank_account", "country": "US", "last4": "6789"},
            "reference": builders.unique("wd")}
    wd = api.post("/v1/withdrawals", body).get_json()  # processing, the amount held
    with unit_of_work() as session:
        reference = session.get(Operation, wd["id"]).channel_reference
    forget(stack, reference)
    assert callbacks.query_status(wd["id"]) == "review"
    [issue] = issues_of(wd["id"])
    result = CliRunner().invoke(main, ["reconcile", "resolve", issue.id, "--note", "PSP confirms it never paid out",
                                       "--settle", "failed", "--actor", "bob", "--json"])
    assert result.exit_code == 0, result.output
    shown = api.get(f"/v1/withdrawals/{wd['id']}").get_json()
    assert (shown["status"], shown["review"], shown["failure_code"], shown["fee"]) == (
        "failed", False, "settled_by_operator", 0)
    assert api.get(f"/v1/accounts/{account['id']}").get_json()["balance"] == {"available": 10_000, "pending": 0}
    [issue] = issues_of(wd["id"])
    assert (issue.status, issue.resolved_by) == ("resolved", "cli:bob")
    # Settled already: a second settlement is refused, and nothing changes.
    again = CliRunner().invoke(main, ["reconcile", "resolve", issue.id, "--note", "x", "--settle", "succeeded"])
    assert again.exit_code == 1
    assert api.get(f"/v1/withdrawals/{wd['id']}").get_json()["status"] == "failed"


def test_an_operation_an_operator_settles_from_the_cli_counts_in_the_metrics(stack, tmp_path):
    """`payrouter reconcile resolve --settle` is a process of its own: its count goes to the install's
    metrics directory (var/metrics, as serve's and the workers'), not to its own memory, lost at exit."""
    import subprocess
    import sys

    from prometheus_client.multiprocess import MultiProcessCollector

    from tests.live import process_env

    api = builders.api(stack.client)
    account = api.account(funded=10_000)
    body = {"account": account["id"], "amount": 3052, "currency": "USD",
            "destination": {"type": "bank_account", "country": "US", "last4": "6789"},
            "reference": builders.unique("wd")}
    wd = api.post("/v1/withdrawals", body).get_json()
    with unit_of_work() as session:
        reference = session.get(Operation, wd["id"]).channel_reference
    forget(stack, reference)
    assert callbacks.query_status(wd["id"]) == "review"
    [issue] = issues_of(wd["id"])
    env = process_env(stack.config, PAYROUTER_VAR_DIR=tmp_path, PAYROUTER_SECRET_KEY=stack.config.secret_key,
                      PAYROUTER_CHANNELS=stack.config.channels_file)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the CLI finds the directory as serve does: var/metrics
    done = subprocess.run([sys.executable, "-m", "app", "reconcile", "resolve", issue.id, "--note", "never paid out",
                           "--settle", "failed"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert api.get(f"/v1/withdrawals/{wd['id']}").get_json()["status"] == "failed"
    files = [str(f) for f in (tmp_path / "metrics").glob("*.db")] if (tmp_path / "metrics").is_dir() else []
    counted = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for metric in MultiProcessCollector.merge(files) for s in metric.samples}
    assert counted.get(("payrouter_operations_total", (("channel", "sandbox"), ("kind", "withdrawal"),
                                                        ("status", "failed")))) == 1.0, sorted(counted)
