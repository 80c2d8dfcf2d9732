"""The operator API's reconciliation workflow (contract §4): list issues by status, channel, class
and run, resolve one with a note (audited), and a run's issues as the CSV the CLI exports."""
import json

from click.testing import CliRunner
from sqlalchemy import select, update

from app.adapters.db import unit_of_work
from app.adapters.models import AuditLog, Operation
from app.entrypoints.cli import main
from tests import builders
from tests.integration.test_admin_data import open_issue
from tests.integration.test_reconcile_issues import reconcile_today

AUTH = {"Authorization": "Bearer ops-secret"}


def _mismatch_run(stack) -> tuple[str, list[str]]:
    """A run that found two status mismatches on the sandbox: its id and the operations."""
    api = builders.api(stack.client)
    paid = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    declined = api.post("/v1/payments", builders.payment_body(2051)).get_json()
    with unit_of_work() as session:
        session.execute(update(Operation).where(Operation.id == paid["id"]).values(status="failed"))
        session.execute(update(Operation).where(Operation.id == declined["id"]).values(status="succeeded"))
    result = reconcile_today()
    assert result.exit_code == 3, result.output
    return json.loads(result.output)["id"], [paid["id"], declined["id"]]


def _ids(client, query: str) -> list[str]:
    answer = client.get(f"/ops/reconciliation/issues{query}", headers=AUTH)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["object"] == "list"
    return [issue["id"] for issue in body["data"]]


def test_list_filters_resolve_and_csv(stack):
    run_id, _ = _mismatch_run(stack)
    fee = open_issue("acq_beta", "fee_mismatch")  # no run: found by no daily run
    stack.serve(stack.config.with_(ops_token="ops-secret"))
    client = stack.client
    assert client.get("/ops/reconciliation/issues").status_code == 401
    everything = _ids(client, "")
    assert len(everything) == 3 and fee in everything
    from_run = _ids(client, f"?run={run_id}")
    assert len(from_run) == 2 and fee not in from_run
    assert _ids(client, "?kind=fee_mismatch") == [fee]
    assert sorted(_ids(client, "?kind=status_mismatch")) == sorted(from_run)
    assert _ids(client, "?channel=acq_beta") == [fee]
    assert sorted(_ids(client, "?channel=sandbox")) == sorted(from_run)
    page = client.get("/ops/reconciliation/issues?limit=2", headers=AUTH).get_json()
    assert len(page["data"]) == 2 and page["has_more"] is True
    rest = _ids(client, f"?limit=2&starting_after={page['data'][-1]['id']}")
    assert [i["id"] for i in page["data"]] + rest == everything
    for query, param in (("?kind=nonsense", "kind"), ("?status=closed", "status"), ("?limit=0", "limit"),
                         ("?status=", "status"), ("?kind=", "kind"),
                         ("?starting_after=ri_nope", "starting_after"), ("?colour=red", "colour")):
        bad = client.get(f"/ops/reconciliation/issues{query}", headers=AUTH)
        assert bad.status_code == 400, query
        assert bad.get_json()["error"]["param"] == param, bad.get_json()

    url = f"/ops/reconciliation/issues/{fee}/resolve"
    assert client.post(url, json={"note": "x"}).status_code == 401
    for body, param in (({}, "note"), ({"note": "   "}, "note"), ({"note": "x", "extra": 1}, "extra")):
        answer = client.post(url, json=body, headers=AUTH)
        assert answer.status_code == 400 and answer.get_json()["error"]["param"] == param, answer.get_json()
    assert _ids(client, "?kind=fee_mismatch") == [fee]  # still open
    done = client.post(url, json={"note": "refunded the fee", "actor": "carol"}, headers=AUTH)
    assert done.status_code == 200, done.get_json()
    assert (done.get_json()["status"], done.get_json()["resolved_by"]) == ("resolved", "ops-api:carol")
    again = client.post(url, json={"note": "again"}, headers=AUTH)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "issue_already_resolved"
    missing = client.post("/ops/reconciliation/issues/ri_nope/resolve", json={"note": "x"}, headers=AUTH)
    assert missing.status_code == 404 and missing.get_json()["error"]["type"]
    assert _ids(client, "?status=resolved") == [fee] and fee not in _ids(client, "")
    assert fee in _ids(client, "?status=all")
    with unit_of_work() as session:
        row = session.scalars(select(AuditLog).where(AuditLog.target == fee)).one()
        assert (row.actor, row.action, row.reason) == ("ops-api:carol", "reconciliation.resolve",
                                                       "refunded the fee")

    client.post(f"/ops/reconciliation/issues/{from_run[0]}/resolve", json={"note": "ok"}, headers=AUTH)
    exported = client.get(f"/ops/reconciliation/{run_id}/issues.csv", headers=AUTH)
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    cli = CliRunner().invoke(main, ["reconcile", "export", run_id])
    assert cli.exit_code == 0, cli.output
    assert exported.get_data(as_text=True) == cli.output
    assert len(cli.output.splitlines()) == 3 and ",resolved," in cli.output and ",open," in cli.output
    unknown = client.get("/ops/reconciliation/recon_nope/issues.csv", headers=AUTH)
    assert unknown.status_code == 404 and unknown.get_json()["error"]["param"] == "run"
    assert client.get(f"/ops/reconciliation/{run_id}/issues.csv").status_code == 401


def test_runs_page_with_a_cursor(stack):
    """Runs created in one instant (ties on created_at) still page in one order, each once."""
    from datetime import datetime

    from app.adapters.models import ReconciliationRun

    at = datetime(2026, 12, 6, 12, 0)
    with unit_of_work() as session:
        for n in range(5):
            session.add(ReconciliationRun(id=f"recon_page{n}", channel="acq_alpha", day="2026-12-06",
                                          statement_lines=0, matched=0, issues=[], created_at=at))
    stack.serve(stack.config.with_(ops_token="ops-secret"))
    seen, cursor = [], ""
    while True:
        page = stack.client.get(f"/ops/reconciliation?limit=2{cursor}", headers=AUTH).get_json()
        seen += [run["id"] for run in page["data"]]
        if not page["has_more"]:
            break
        cursor = f"&starting_after={page['data'][-1]['id']}"
    assert seen == [f"recon_page{n}" for n in reversed(range(5))]
    bad = stack.client.get("/ops/reconciliation?starting_after=recon_nope", headers=AUTH)
    assert bad.status_code == 400 and bad.get_json()["error"]["param"] == "starting_after"
