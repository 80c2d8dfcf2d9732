"""A channel pruned from the definitions while its operations were not all reconciled (#14 attack,
finding 7a): `reconcile --recent` over every channel, and the workers' pass, no longer skip it
without a word: it is a `channel_not_reconciled` issue (once, however many passes), the command
says so and exits 3 until an operator resolves it."""
import json

from click.testing import CliRunner
from sqlalchemy import delete, func, select

from app.adapters import channel_definitions
from app.adapters.db import unit_of_work
from app.adapters.models import ChannelDefinition, ReconciliationIssue
from app.adapters.redis_conn import get_redis
from app.entrypoints.cli import main
from app.services import issues as issue_store
from app.services import reconcile as recon
from tests import builders
from tests.integration.test_channel_accounts import pay


def _recent(*args):
    get_redis().delete(recon.LEASE_KEY)
    return CliRunner().invoke(main, ["reconcile", "--recent", "--json", *args])


def _prune(channel_id: str) -> None:
    """What `channels import --prune` does to a channel the file leaves out."""
    with unit_of_work() as session:
        session.execute(delete(ChannelDefinition).where(ChannelDefinition.id == channel_id))
    channel_definitions.announce()


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
