"""One merchant channel account's statement never stops the reconciliation of the others (contract
§4; the sandbox over HTTP): an account whose statement cannot be read (its key refused, a deleted
account's too) is an open ``statement_unavailable`` issue of its own, in the CLI's output, /ops and
the console; every other account and channel is still reconciled; the command exits 3 (open
issues), not 1; a later run that reads that statement closes the issue."""
import datetime as dt
import json

from click.testing import CliRunner
from sqlalchemy import func, select, update

from app.adapters import account_channels
from app.adapters.db import unit_of_work
from app.adapters.models import ChannelAccount, ReconciliationIssue, ReconciliationRun
from app.entrypoints.cli import main
from tests import builders
from tests.integration.test_admin_tx_pages import Console
from tests.integration.test_channel_accounts import bring, pay

FORGED = "sbxkey_" + "f" * 32
OPS = {"Authorization": "Bearer ops-secret"}


def _today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def _daily(channel: str = "sandbox"):
    return CliRunner().invoke(main, ["reconcile", "--channel", channel, "--date", _today(), "--json"])


def test_an_account_whose_statement_cannot_be_read_is_an_issue_of_its_own_and_the_others_are_reconciled(stack):
    mine, theirs, gone = (builders.api(stack.client, name) for name in ("Mine", "Theirs", "Gone"))
    good = bring(mine, builders.sandbox_account(stack.sandbox_url)["api_key"]).get_json()
    revoked = builders.revoked_channel_account(theirs.merchant_id, FORGED)
    deleted = builders.revoked_channel_account(gone.merchant_id, FORGED + "d", deleted_at=dt.datetime.now(
        dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(days=1))  # kept for reconciliation 8 days
    pay(mine)
    pay(builders.api(stack.client, "Platform"))

    result = _daily()
    assert result.exit_code == 3, result.output  # open issues: not an error of the command
    runs = {run["channel_account"]: run for run in json.loads(result.output)}
    assert set(runs) == {None, good["id"], revoked, deleted}
    for clean in (None, good["id"]):  # the platform's and the good account's statements: read and matched
        assert (runs[clean]["statement_lines"], runs[clean]["matched"], runs[clean]["issues"]) == (1, 1, []), runs
    for unread, merchant in ((revoked, theirs.merchant_id), (deleted, gone.merchant_id)):
        run = runs[unread]
        assert (run["statement_lines"], run["issue_count"], run["open_issues"]) == (0, 1, 1)
        [issue] = run["issues"]
        assert (issue["issue"], issue["channel_reference"], issue["status"]) == (
            "statement_unavailable", f"{unread}:{_today()}", "open")
        assert issue["ours"] == {"channel_account": unread, "merchant": merchant, "deleted": unread == deleted,
                                 "date": _today()}
        assert issue["theirs"]["error"] == "channel_unavailable" and "401" in issue["theirs"]["message"]
        assert run["summary"]["error"]["code"] == "channel_unavailable"
    assert FORGED not in result.output

    # The same day again: the same issue (one per account and day), not another.
    assert _daily().exit_code == 3
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(ReconciliationIssue)
                              .where(ReconciliationIssue.kind == "statement_unavailable")) == 2

    # Seen by ops: the API's issues (filtered by the class) and the console's page.
    stack.serve(stack.config.with_(ops_token="ops-secret"))
    listed = stack.client.get("/ops/reconciliation/issues?kind=statement_unavailable", headers=OPS)
    assert listed.status_code == 200, listed.get_json()
    assert sorted(i["channel_reference"] for i in listed.get_json()["data"]) == sorted(
        f"{account}:{_today()}" for account in (revoked, deleted))
    page = Console(stack.server.app, "viewer").text("/admin/reconciliation/?kind=statement_unavailable")
    assert f"{revoked}:{_today()}" in page and f"{deleted}:{_today()}" in page and revoked in page

    # Its key taken again at the PSP (here: the account's credentials made good), the next run reads
    # the statement and closes the issue itself.
    with unit_of_work() as session:
        session.execute(update(ChannelAccount).where(ChannelAccount.id.in_((revoked, deleted))).values(
            credentials_encrypted=account_channels.seal(
                {"api_key": builders.sandbox_account(stack.sandbox_url)["api_key"]})))
    account_channels._made.clear()  # the instances kept for the accounts' old keys
    result = _daily()
    assert result.exit_code == 0, result.output
    with unit_of_work() as session:
        closed = session.execute(select(ReconciliationIssue.status, ReconciliationIssue.resolved_by).where(
            ReconciliationIssue.kind == "statement_unavailable")).all()
    assert [status for status, _ in closed] == ["resolved", "resolved"]
    assert all(by.startswith("reconciliation:recon_") for _, by in closed)


def test_an_unread_account_stops_neither_its_channel_nor_the_others_in_a_pass(stack):
    """Near-real-time, the workers' pass and `reconcile --recent` over every channel: an account of
    acq_alpha whose key is refused is an issue (once per day, however many passes), and sandbox,
    acq_alpha's platform account and acq_beta are still compared; the CLI says which account and
    exits 3, not 1."""
    from app.adapters.redis_conn import get_redis
    from app.services import reconcile as recon

    merchant = builders.api(stack.client, "Theirs")
    revoked = builders.revoked_channel_account(merchant.merchant_id, FORGED, channel="acq_alpha")
    good = bring(builders.api(stack.client, "Mine"), builders.sandbox_account(stack.sandbox_url)["api_key"],
                 channel="acq_alpha").get_json()
    done = recon.run_continuous()
    assert set(done) == {"sandbox", "acq_alpha", f"acq_alpha/{good['id']}", "acq_beta"}, done
    with unit_of_work() as session:
        [issue] = session.scalars(select(ReconciliationIssue).where(
            ReconciliationIssue.kind == "statement_unavailable",
            ReconciliationIssue.channel_reference.like(f"{revoked}:%"))).all()
        assert (issue.channel, issue.channel_reference, issue.run_id) == ("acq_alpha", f"{revoked}:{_today()}", None)
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)
                              .where(ReconciliationRun.channel_account == revoked)) == 0  # its window stays
    get_redis().delete(recon.LEASE_KEY)
    result = CliRunner().invoke(main, ["reconcile", "--recent", "--json"])
    assert result.exit_code == 3, result.output
    assert f"Unread: account {revoked} (merchant {merchant.merchant_id})" in result.stderr
    assert issue.id in result.stderr and FORGED not in result.output
    assert {(run["channel"], run["channel_account"]) for run in json.loads(result.stdout)} <= {
        ("sandbox", None), ("acq_alpha", None), ("acq_alpha", good["id"]), ("acq_beta", None)}
    with unit_of_work() as session:  # one issue for the account and day, however many passes
        assert session.scalar(select(func.count()).select_from(ReconciliationIssue).where(
            ReconciliationIssue.kind == "statement_unavailable",
            ReconciliationIssue.channel_reference.like(f"{revoked}:%"))) == 1
