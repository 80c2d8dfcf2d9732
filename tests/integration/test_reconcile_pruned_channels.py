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
from app.adapters.models import ChannelDefinition, ReconciliationIssue, utcnow
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
