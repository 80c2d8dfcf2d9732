"""Batch reconciliation against the sandbox's statement, through the CLI."""
import datetime as dt
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from app.adapters.db import unit_of_work
from app.adapters.models import Attempt, Operation, ReconciliationRun, new_id
from app.entrypoints.cli import main
from tests import builders
from tests.support import wait_until


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
    assert result.exit_code == 3, result.output  # it found open issues
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


# --- near-real-time reconciliation -------------------------------------------------------------

@pytest.fixture
def no_grace(stack, monkeypatch):
    """Passes see lines settled up to the moment they run (the grace is for real channels' lag)."""
    from app.services import reconcile as recon

    monkeypatch.setattr(recon, "SETTLE_GRACE", dt.timedelta(0))
    monkeypatch.setattr(recon, "MIN_WINDOW", dt.timedelta(seconds=1))
    return stack


def test_recent_pass_finds_disagreements_within_its_window_and_compensates(no_grace):
    stack = no_grace
    from app.services import reconcile as recon

    api = builders.api(stack.client)
    ok = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    lost = api.post("/v1/payments", builders.payment_body(2054)).get_json()  # the channel settled; we wait
    skewed = api.post("/v1/payments", builders.payment_body(3000)).get_json()
    with unit_of_work() as session:
        session.execute(update(Operation).where(Operation.id == skewed["id"]).values(amount=2999))
    import time

    time.sleep(1.2)  # the sandbox settles the timed-out charge after the channel timeout
    run = recon.reconcile_recent("sandbox")
    assert run.mode == "continuous" and run.window_end > run.window_start
    kinds = sorted((i["issue"], i["ours"]["id"]) for i in run.issues)
    assert kinds == sorted([("pending_in_payrouter", lost["id"]), ("amount_mismatch", skewed["id"])])
    assert run.matched == 1 and run.statement_lines == 3
    stack.work()  # the status query queued by the pass settles the payment we were waiting on
    assert api.get(f"/v1/payments/{lost['id']}").get_json()["status"] == "succeeded"
    assert ok["status"] == "succeeded"


def test_each_pass_starts_where_the_last_ended_and_reports_only_what_is_new(no_grace):
    stack = no_grace
    from app.services import reconcile as recon

    api = builders.api(stack.client)
    api.post("/v1/payments", builders.payment_body(2000))
    import time

    time.sleep(1.1)  # windows end on whole seconds
    first = recon.reconcile_recent("sandbox")
    assert (first.statement_lines, first.matched, first.issues) == (1, 1, [])
    assert recon.reconcile_recent("sandbox", now=first.window_end + dt.timedelta(milliseconds=900)) is None
    time.sleep(1.1)
    newer = api.post("/v1/payments", builders.payment_body(2100)).get_json()
    with unit_of_work() as session:  # we now claim an outcome the channel never had
        session.add(Attempt(id=new_id("att"), operation_id=newer["id"], seq=9, channel="sandbox",
                            status="succeeded", channel_reference="sbx_never_seen",
                            updated_at=first.window_end + dt.timedelta(milliseconds=1)))
    time.sleep(1.1)  # windows end on whole seconds
    second = recon.reconcile_recent("sandbox")
    assert second.window_start == first.window_end
    assert (second.statement_lines, second.matched) == (1, 1)  # only the newer payment's line
    assert [(i["issue"], i["channel_reference"]) for i in second.issues] == [("missing_at_channel", "sbx_never_seen")]
    with unit_of_work() as session:
        windows = session.execute(select(ReconciliationRun.window_start, ReconciliationRun.window_end)
                                  .order_by(ReconciliationRun.window_start)).all()
    assert windows[0][1] == windows[1][0]  # contiguous: nothing between passes goes unchecked


def test_one_pass_at_a_time_across_workers_and_off_when_the_interval_is_zero(stack):
    from app.adapters.redis_conn import get_redis
    from app.config import scoped
    from app.services import reconcile as recon

    assert recon.run_continuous() == {"sandbox": 0, "acq_alpha": 0, "acq_beta": 0}
    assert recon.run_continuous() == {}  # another worker's pass holds the lease
    with scoped(stack.config.with_(reconcile_interval=0)):  # a worker whose process has passes off
        get_redis().delete(recon.LEASE_KEY)
        assert recon.run_continuous() == {}


def test_a_batch_worker_runs_passes_on_its_own(stack):
    from app.adapters import jobs
    from app.config import scoped
    from app.entrypoints import worker

    with scoped(stack.config.with_(reconcile_interval=1)):  # the worker's process configuration: its threads keep it
        threads = [t for t in worker.maintenance_for([jobs.BATCH]) if t.name == "payrouter-reconcile-recent"]
    assert len(threads) == 1
    threads[0].start()
    try:
        def passed() -> bool:
            with unit_of_work() as session:
                run = session.scalars(select(ReconciliationRun).where(ReconciliationRun.mode == "continuous")).first()
            return run is not None

        wait_until(passed, timeout=10, what="a near-real-time pass")
    finally:
        threads[0].stopped.set()
        threads[0].join(5)


def test_cli_recent_and_list_and_the_ops_api(stack):
    api = builders.api(stack.client)
    # Nothing stored yet: the text says so instead of printing nothing.
    assert CliRunner().invoke(main, ["reconcile", "--list"]).output == "No stored runs.\n"
    assert CliRunner().invoke(main, ["reconcile", "--list", "--issues", "--channel", "sandbox"]).output == \
        "No stored runs with issues of channel sandbox.\n"
    assert CliRunner().invoke(main, ["reconcile", "issues"]).output == "No open issues.\n"
    assert CliRunner().invoke(main, ["reconcile", "issues", "--all", "--kind", "fee_mismatch"]).output == \
        "No issues of kind fee_mismatch.\n"
    api.post("/v1/payments", builders.payment_body(2000))
    result = CliRunner().invoke(main, ["reconcile", "--recent", "--channel", "sandbox", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["mode"] == "continuous"
    listed = CliRunner().invoke(main, ["reconcile", "--list", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.output)["channel"] == "sandbox"
    assert CliRunner().invoke(main, ["reconcile", "--recent", "--date", "2026-01-01"]).exit_code == 2
    assert CliRunner().invoke(main, ["reconcile"]).exit_code == 2
    stack.serve(stack.config.with_(ops_token="ops-secret"))
    client = stack.client
    auth = {"Authorization": "Bearer ops-secret"}
    body = client.get("/ops/reconciliation?channel=sandbox&limit=5", headers=auth).get_json()
    assert [run["mode"] for run in body["data"]] == ["continuous"]
    assert client.get("/ops/reconciliation?issues=true", headers=auth).get_json()["data"] == []
    bad = client.get("/ops/reconciliation?limit=0", headers=auth)
    assert bad.status_code == 400 and bad.get_json()["error"]["param"] == "limit"
    assert client.get("/ops/reconciliation?nope=1", headers=auth).status_code == 400
    assert client.get("/ops/reconciliation").status_code == 401


def test_old_empty_passes_are_purged_but_not_the_newest_or_those_that_found_something(clean):
    from app.adapters.models import utcnow
    from app.services import reconcile as recon

    now = utcnow()
    old = now - recon.KEEP_EMPTY_RUNS - dt.timedelta(hours=1)

    def run(channel_id, end, lines=0, issues=(), created=old):
        return ReconciliationRun(id=new_id("recon"), channel=channel_id, day=end.date().isoformat(), mode="continuous",
                                 window_start=end - dt.timedelta(minutes=1), window_end=end, statement_lines=lines,
                                 matched=lines, issues=list(issues), issue_count=len(issues), channel_fees=0,
                                 created_at=created)

    with unit_of_work() as session:
        session.add_all([
            run("sandbox", old - dt.timedelta(minutes=2)),  # empty and old: purged
            run("sandbox", old - dt.timedelta(minutes=1), lines=3),  # compared lines: kept
            run("sandbox", old, issues=[{"issue": "missing_at_channel", "channel_reference": "x"}]),  # kept
            run("sandbox", now, created=now),  # empty but recent: kept
            run("acq_beta", old),  # empty and old, but acq_beta's newest: kept (its next pass starts there)
        ])
    assert recon.purge_empty_runs() == 1
    with unit_of_work() as session:
        left = sorted((r.channel, r.statement_lines, bool(r.issues))
                      for r in session.scalars(select(ReconciliationRun)))
    assert left == [("acq_beta", 0, False), ("sandbox", 0, False), ("sandbox", 0, True), ("sandbox", 3, False)]


def test_no_database_connection_is_held_while_the_channel_is_asked(no_grace, monkeypatch):
    """Asking the channel about timed-out attempts can be slow: the pass holds no transaction
    (on SQLite that would be the write lock) while it does."""
    from app.adapters.db import get_engine
    from app.services import reconcile as recon
    from channels.sandbox.adapter import SandboxChannel

    stack = no_grace
    api = builders.api(stack.client)
    lost = api.post("/v1/payments", builders.payment_body(2054)).get_json()  # timed out: no reference
    assert lost["status"] == "processing"
    import time

    time.sleep(1.2)
    held = []
    real_query = SandboxChannel.query

    def query(self, reference, channel_reference=None):
        held.append(get_engine().pool.checkedout())
        return real_query(self, reference, channel_reference)

    monkeypatch.setattr(SandboxChannel, "query", query)
    run = recon.reconcile_recent("sandbox")
    assert held and set(held) == {0}
    assert [i["issue"] for i in run.issues] == ["pending_in_payrouter"]


def test_after_a_long_outage_each_pass_catches_up_a_day_and_nothing_is_skipped(no_grace):
    from app.adapters.models import utcnow
    from app.services import reconcile as recon

    now = utcnow()  # one clock for every pass: the test does not depend on seconds ticking by
    last_end = now.replace(microsecond=0) - dt.timedelta(days=3)
    with unit_of_work() as session:
        session.add(ReconciliationRun(id=new_id("recon"), channel="sandbox", day=last_end.date().isoformat(),
                                      mode="continuous", window_start=last_end - dt.timedelta(minutes=1),
                                      window_end=last_end, statement_lines=0, matched=0, issues=[], issue_count=0,
                                      channel_fees=0))
    windows = [(run.window_start, run.window_end) for run in
               (recon.reconcile_recent("sandbox", now=now) for _ in range(4)) if run is not None]
    assert windows[0] == (last_end, last_end + recon.MAX_WINDOW)
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))  # contiguous
    assert len(windows) == 3 and windows[-1][1] == now.replace(microsecond=0)  # caught up: then idle


def test_an_outcome_learned_late_is_found_on_an_earlier_days_statement(clean):
    """Settled by the channel before midnight, learned by us after: the statement of the day the
    operation was created is read too, so this is no 'missing_at_channel'."""
    from app.adapters.models import utcnow
    from app.services import reconcile as recon
    from channels.base import StatementLine

    merchant_id, _ = builders.merchant("Late")
    now = utcnow().replace(microsecond=0)
    created = now - dt.timedelta(days=2)
    with unit_of_work() as session:
        op = Operation(id=new_id("pay"), merchant_id=merchant_id, kind="payment", status="succeeded", version=2,
                       amount=1000, currency="USD", fee=0, reference="late", channel="sandbox", routing={},
                       metadata_={}, created_at=created, updated_at=now)
        session.add(op)
        session.flush()
        session.add(Attempt(id=new_id("att"), operation_id=op.id, seq=1, channel="sandbox", status="succeeded",
                            channel_reference="sbx_late", created_at=created, updated_at=now))
    settled = dt.datetime.combine(created.date(), dt.time(23, 59), tzinfo=dt.timezone.utc)
    fetched = []

    class Channel:  # a stand-in for the PSP's statements: the line is on the day the payment was made
        def statement(self, day):
            fetched.append(day)
            if day == created.date():
                return [StatementLine("sbx_late", "payment", 1000, "USD", "succeeded", 0, settled)]
            return []

    statements = recon._Statements(Channel(), now.date(), now.date())
    run = recon._compare("sandbox", Channel(), statements, now - dt.timedelta(minutes=1), now + dt.timedelta(seconds=1),
                         "continuous")
    assert run.issues == []
    assert created.date() in fetched
    statements = recon._Statements(Channel(), now.date(), now.date())  # and a line nowhere is reported
    with unit_of_work() as session:
        session.execute(update(Attempt).where(Attempt.channel_reference == "sbx_late")
                        .values(channel_reference="sbx_nowhere"))
    run = recon._compare("sandbox", Channel(), statements, now - dt.timedelta(minutes=1), now + dt.timedelta(seconds=1),
                         "daily")  # the same window again: a second near-real-time pass over it records nothing
    assert [i["issue"] for i in run.issues] == ["missing_at_channel"]


def test_the_lease_lasts_one_interval_from_the_start_of_a_pass(stack):
    from app.adapters.redis_conn import get_redis
    from app.services import reconcile as recon

    assert recon.run_continuous() != {}
    ttl = get_redis().ttl(recon.LEASE_KEY)
    assert 0 < ttl <= stack.config.reconcile_interval  # not the long bound it was taken with
    assert recon.run_continuous() == {}


def test_a_pass_that_lost_its_lease_stops_and_leaves_the_new_holders_lease_alone(stack, monkeypatch):
    from app.adapters.redis_conn import get_redis
    from app.services import reconcile as recon

    seen = []
    real = recon.reconcile_recent

    def reconcile_recent(channel_id, now=None, account=None):
        seen.append(channel_id)
        get_redis().set(recon.LEASE_KEY, "another-worker", ex=300)  # our lease ran out; another took it
        return real(channel_id, now)

    monkeypatch.setattr(recon, "reconcile_recent", reconcile_recent)
    recon.run_continuous()
    assert len(seen) == 1  # stopped before the next channel
    assert get_redis().get(recon.LEASE_KEY) in (b"another-worker", "another-worker")
    assert 250 < get_redis().ttl(recon.LEASE_KEY) <= 300  # neither shortened nor deleted
