"""Batch reconciliation against the sandbox's statement, through the CLI."""
import datetime as dt
import json

from click.testing import CliRunner
from sqlalchemy import select, update

from app.cli import main
from app.db import unit_of_work
from app.models import Attempt, Operation, ReconciliationRun, new_id
from tests import builders


def test_reconcile_finds_each_kind_of_issue_and_compensates(stack):
    api = builders.api(stack.client)
    ok = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    declined = api.post("/v1/payments", builders.payment_body(2051)).get_json()
    lost = api.post("/v1/payments", builders.payment_body(2054)).get_json()  # the channel settled; we wait
    skewed = api.post("/v1/payments", builders.payment_body(3000)).get_json()
    with unit_of_work() as session:  # our record disagrees with the channel's on one amount
        session.execute(update(Operation).where(Operation.id == skewed["id"]).values(amount=2999))
        ghost = session.get(Attempt, session.scalars(select(Attempt.id).where(
            Attempt.operation_id == ok["id"])).one())
        session.add(Attempt(id=new_id("att"), operation_id=declined["id"], seq=9, channel="sandbox",
                            status="succeeded", channel_reference="sbx_never_seen", updated_at=ghost.updated_at))
    import time

    time.sleep(1.0)  # the sandbox settles the timed-out charge after the channel timeout
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    result = CliRunner().invoke(main, ["reconcile", "--channel", "sandbox", "--date", today, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    kinds = sorted((i["issue"], (i.get("ours") or {}).get("id")) for i in report["issues"])
    assert kinds == sorted([("pending_in_payrouter", lost["id"]), ("amount_mismatch", skewed["id"]),
                            ("missing_at_channel", declined["id"])])
    assert report["matched"] == 2 and report["statement_lines"] == 4  # ok and declined match
    assert report["channel_fees"] > 0
    with unit_of_work() as session:
        assert session.scalars(select(ReconciliationRun)).one().matched == 2
    # The compensation: the queued status query settles the payment we were waiting on.
    stack.work()
    assert api.get(f"/v1/payments/{lost['id']}").get_json()["status"] == "succeeded"


def test_reconcile_refuses_unknown_channel_and_bad_date(stack):
    assert CliRunner().invoke(main, ["reconcile", "--channel", "nope", "--date", "2026-01-01"]).exit_code != 0
    assert CliRunner().invoke(main, ["reconcile", "--channel", "sandbox", "--date", "yesterday"]).exit_code != 0
