"""A channel pruned from the definitions while its operations were not all reconciled (#14 attack,
finding 7a): `reconcile --recent` over every channel, and the workers' pass, no longer skip it
without a word: it is a `channel_not_reconciled` issue (once, however many passes), the command
says so and exits 3 until an operator resolves it."""
import datetime as dt
import json

from click.testing import CliRunner
from sqlalchemy import delete, func, select

from app.adapters import channel_definitions
from app.adapters.db import unit_of_work
from app.adapters.models import ChannelDefinition, ReconciliationIssue, ReconciliationRun, new_id, utcnow
from app.adapters.redis_conn import get_redis
from app.entrypoints.cli import main
from app.services import issues as issue_store
from app.services import reconcile as recon
from tests import builders
from tests.integration.test_channel_accounts import pay


def _recent(*args):
    get_redis().delete(recon.LEASE_KEY)
    return CliRunner().invoke(main, ["reconcile", "--recent", "--json", *args])


def _prune(channel_id: str) -> ChannelDefinition:
    """What `channels import --prune` does to a channel the file leaves out; its row as it was."""
    with unit_of_work() as session:
        row = session.get(ChannelDefinition, channel_id)
        session.expunge(row)
        session.execute(delete(ChannelDefinition).where(ChannelDefinition.id == channel_id))
    channel_definitions.announce()
    return row


def _import_again(row: ChannelDefinition) -> None:
    """What `channels import` does to a channel the file lists again."""
    with unit_of_work() as session:
        session.merge(row)
    channel_definitions.announce()


def _not_reconciled() -> dict:
    [issue] = issue_store.listing(kind="channel_not_reconciled", status=None)
    return issue


def test_a_pruned_channel_with_outcomes_not_compared_is_an_issue_not_a_silent_skip(stack):
    merchant = builders.api(stack.client, "Shop")
    first = pay(merchant, 100000)  # 100000 USD by card: acq_alpha
    assert first["attempts"][0]["channel"] == "acq_alpha", first
    assert recon.run_continuous().get("acq_alpha") is not None  # acq_alpha reconciled up to now
    later = pay(merchant, 100000)
    assert later["attempts"][0]["channel"] == "acq_alpha", later

    _prune("acq_alpha")
    get_redis().delete(recon.LEASE_KEY)
    recon.run_continuous()  # the workers' pass
    assert "acq_alpha" not in recon.registry().ids()
    with unit_of_work() as session:
        [issue] = session.scalars(select(ReconciliationIssue).where(
            ReconciliationIssue.kind == "channel_not_reconciled")).all()
        assert (issue.channel, issue.status) == ("acq_alpha", "open")
        assert issue.channel_reference.startswith("acq_alpha:")
        # Both: a pass's window ends SETTLE_GRACE before it ran, so the first was not compared either.
        assert (issue.ours["attempts"], issue.ours["processing"], issue.ours["defined"]) == (2, 0, False)
        assert issue.theirs["error"] == "channel_not_defined"

    result = _recent()
    assert result.exit_code == 3, result.output
    assert "Not reconciled: channel acq_alpha: pruned from the channel definitions" in result.stderr
    assert issue.id in result.stderr and "2 attempt(s)" in result.stderr
    shown = json.loads(result.stdout)  # one run is shown as itself, more as a list
    assert all(run["channel"] != "acq_alpha" for run in ([shown] if isinstance(shown, dict) else shown))
    with unit_of_work() as session:  # one issue however many passes
        assert session.scalar(select(func.count()).select_from(ReconciliationIssue).where(
            ReconciliationIssue.kind == "channel_not_reconciled")) == 1
    assert [i["id"] for i in issue_store.listing(kind="channel_not_reconciled")] == [issue.id]

    # Checked by hand with the PSP and resolved: the pass is clean again (it stays resolved).
    issue_store.resolve(issue.id, "settled by hand with the acquirer", "cli:ops")
    result = _recent()
    assert result.exit_code == 0, result.output
    assert "Not reconciled" not in result.stderr


def test_a_channel_imported_again_closes_its_issue_by_the_run_that_compares_what_was_not(stack):
    """#14: acq_alpha pruned with two payments not compared (a channel_not_reconciled issue), then
    imported again: the import and a pass whose window ends before the issue was recorded leave it
    open; the daily run that reads those days closes it, naming itself."""
    merchant = builders.api(stack.client, "Shop")
    assert pay(merchant, 100000)["attempts"][0]["channel"] == "acq_alpha"
    assert recon.run_continuous().get("acq_alpha") is not None
    assert pay(merchant, 100000)["attempts"][0]["channel"] == "acq_alpha"
    row = _prune("acq_alpha")
    get_redis().delete(recon.LEASE_KEY)
    recon.run_continuous()
    issue = _not_reconciled()
    assert issue["status"] == "open"

    _import_again(row)
    assert "acq_alpha" in recon.registry().ids()
    assert _not_reconciled()["status"] == "open"  # the import alone compares nothing
    get_redis().delete(recon.LEASE_KEY)
    recon.run_continuous()  # its window ends SETTLE_GRACE ago: before the issue was recorded
    assert _not_reconciled()["status"] == "open"

    since = dt.date.fromisoformat(issue["ours"]["since"][:10])
    days = [since + dt.timedelta(days=n) for n in range((utcnow().date() - since).days + 1)]
    for day in days:
        result = CliRunner().invoke(main, ["reconcile", "--channel", "acq_alpha", "--date", day.isoformat(), "--json"])
        assert result.exit_code == 0, result.output
    closed = _not_reconciled()
    assert closed["status"] == "resolved" and closed["resolved_by"].startswith("reconciliation:recon_"), closed
    result = _recent()
    assert result.exit_code == 0 and "Not reconciled" not in result.stderr, result.output


def test_reconcile_channel_of_a_pruned_channel_names_its_issue_and_exits_3_then_1_once_resolved(stack):
    merchant = builders.api(stack.client, "Shop")
    assert pay(merchant, 100000)["attempts"][0]["channel"] == "acq_alpha"
    get_redis().delete(recon.LEASE_KEY)
    assert recon.run_continuous().get("acq_alpha") is not None
    assert pay(merchant, 100000)["attempts"][0]["channel"] == "acq_alpha"
    _prune("acq_alpha")

    for args in (["--recent"], ["--date", utcnow().date().isoformat()]):
        result = CliRunner().invoke(main, ["reconcile", "--channel", "acq_alpha", *args])
        assert result.exit_code == 3, result.output
        issue = _not_reconciled()
        assert ("Not reconciled: channel acq_alpha: pruned from the channel definitions: its statement cannot be "
                "read; 2 attempt(s) recorded since" in result.stderr and issue["id"] in result.stderr), result.output
        assert "Traceback" not in result.output and result.output.count("acq_alpha") == 1, result.output

    issue_store.resolve(issue["id"], "compared by hand", "cli:ops")
    result = CliRunner().invoke(main, ["reconcile", "--channel", "acq_alpha", "--recent"])
    assert result.exit_code == 1, result.output
    assert "no such channel acq_alpha: it is not among the stored channel definitions" in result.stderr
    result = CliRunner().invoke(main, ["reconcile", "--channel", "nowhere", "--recent"])
    assert result.exit_code == 1 and "no such channel nowhere" in result.stderr, result.output


def test_a_channel_pruned_before_its_first_reconciliation_run_is_an_issue_not_a_silent_skip(stack):
    """#14 (attack a14 M1): acq_alpha carried payments but no reconciliation run ever compared them
    when it was pruned: `reconcile --recent` finds it by its operations (not only by its runs), one
    issue from its first attempt, exit 3, closed only by runs that compared from that attempt on."""
    merchant = builders.api(stack.client, "Shop")
    first = pay(merchant, 100000)
    assert first["attempts"][0]["channel"] == "acq_alpha", first
    assert pay(merchant, 100000)["attempts"][0]["channel"] == "acq_alpha"
    _prune("acq_alpha")  # before any reconciliation run of acq_alpha
    get_redis().delete(recon.LEASE_KEY)
    recon.run_continuous()  # the workers' pass

    result = _recent()
    assert result.exit_code == 3, result.output
    assert ("Not reconciled: channel acq_alpha: pruned from the channel definitions before its first "
            "reconciliation run: its statement cannot be read; 2 attempt(s)" in result.stderr), result.output
    issue = _not_reconciled()
    assert issue["status"] == "open" and issue["id"] in result.stderr
    assert (issue["ours"]["reconciled"], issue["ours"]["attempts"], issue["ours"]["defined"]) == (False, 2, False)
    assert _recent().exit_code == 3 and len(issue_store.listing(kind="channel_not_reconciled", status=None)) == 1

    # Imported again, its first near-real-time pass looks back only so far: passes starting after its
    # first attempt do not close the issue, however far they reach; passes from before it do.
    since = dt.datetime.fromisoformat(issue["ours"]["since"])
    with unit_of_work() as session:
        recorded = session.get(ReconciliationIssue, issue["id"]).created_at
    _passed_elsewhere(since + dt.timedelta(milliseconds=1), recorded + dt.timedelta(seconds=1))
    with unit_of_work() as session:
        recon._caught_up(session, "acq_alpha", "recon_after")
    assert _not_reconciled()["status"] == "open"
    _passed_elsewhere(since - dt.timedelta(seconds=1), since + dt.timedelta(milliseconds=1))
    with unit_of_work() as session:
        recon._caught_up(session, "acq_alpha", "recon_from_before")
    closed = _not_reconciled()
    assert (closed["status"], closed["resolved_by"]) == ("resolved", "reconciliation:recon_from_before"), closed
    result = _recent()
    assert result.exit_code == 0 and "Not reconciled" not in result.stderr, result.output


def _built_here(row: ChannelDefinition, built: bool) -> None:
    """acq_alpha's stored definition as it is (``built``), or one this process cannot build (its
    base_url names a variable its environment lacks), as a host without the channel's settings sees it."""
    definition = dict(row.definition)
    if not built:
        definition["config"] = {**definition["config"], "base_url": "${H6_NOT_SET_ON_THIS_HOST}"}
    with unit_of_work() as session:
        session.merge(ChannelDefinition(id=row.id, position=row.position, definition=definition,
                                        updated_by="test", updated_at=utcnow()))
    channel_definitions.announce()
    assert ("acq_alpha" in recon.registry().ids()) is built


def _passed_elsewhere(start: dt.datetime, end: dt.datetime) -> None:
    """A near-real-time pass of acq_alpha over [start, end] by a worker that runs it."""
    with unit_of_work() as session:
        session.add(ReconciliationRun(id=new_id("recon"), channel="acq_alpha", day=end.date().isoformat(),
                                      mode="continuous", window_start=start, window_end=end, statement_lines=0,
                                      matched=0, issues=[], issue_count=0, summary={}))


def test_a_host_that_cannot_build_a_channel_others_reconcile_keeps_one_issue_for_it(stack):
    """#14 (attack a14 M1): a host without acq_alpha's settings looks for channels it cannot
    reconcile while other workers' passes move acq_alpha's runs on (each still short of when the
    issue was recorded, so none closes it): one open issue for the channel, found again on every
    look, not a new one for each point the others' runs reached."""
    merchant = builders.api(stack.client, "Shop")
    with unit_of_work() as session:
        row = session.get(ChannelDefinition, "acq_alpha")
        session.expunge(row)
    assert pay(merchant, 100000)["attempts"][0]["channel"] == "acq_alpha"
    get_redis().delete(recon.LEASE_KEY)
    assert recon.run_continuous().get("acq_alpha") is not None  # a worker that runs it reconciles it
    assert pay(merchant, 100000)["attempts"][0]["channel"] == "acq_alpha"

    _built_here(row, built=False)
    [first] = recon.unreconciled_channels()
    assert (first["status"], first["ours"]["defined"], first["theirs"]["error"]) == ("open", True, "channel_not_built")
    since = dt.datetime.fromisoformat(first["ours"]["since"])
    for step in (1, 2):  # the others' passes move acq_alpha's runs on, with payments since; this host looks again
        _built_here(row, built=True)
        assert pay(merchant, 100000)["attempts"][0]["channel"] == "acq_alpha"
        _passed_elsewhere(since + dt.timedelta(milliseconds=step - 1), since + dt.timedelta(milliseconds=step))
        _built_here(row, built=False)
        assert [issue["id"] for issue in recon.unreconciled_channels()] == [first["id"]]
    assert [issue["id"] for issue in issue_store.listing(kind="channel_not_reconciled", status=None)] == [first["id"]]
