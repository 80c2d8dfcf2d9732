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


def _daily(channel: str = "sandbox", day: str | None = None):
    return CliRunner().invoke(main, ["reconcile", "--channel", channel, "--date", day or _today(), "--json"])


def _unread(account: str) -> list:
    with unit_of_work() as session:
        return session.execute(select(ReconciliationIssue.channel_reference, ReconciliationIssue.status,
                                      ReconciliationIssue.theirs).where(
            ReconciliationIssue.kind == "statement_unavailable",
            ReconciliationIssue.channel_reference.like(f"{account}:%"))
            .order_by(ReconciliationIssue.channel_reference)).all()


def _make_good(stack, account: str) -> None:
    """The account's key taken again at the PSP: its statements read."""
    with unit_of_work() as session:
        session.execute(update(ChannelAccount).where(ChannelAccount.id == account).values(
            credentials_encrypted=account_channels.seal(
                {"api_key": builders.sandbox_account(stack.sandbox_url)["api_key"]})))
    account_channels._made.clear()  # the instances kept for the account's old key


def _make_bad(account: str) -> None:
    with unit_of_work() as session:
        session.execute(update(ChannelAccount).where(ChannelAccount.id == account).values(
            credentials_encrypted=account_channels.seal({"api_key": FORGED})))
    account_channels._made.clear()


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
                                 "date": _today(), "mode": "daily"}
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
    shown = json.loads(result.stdout)  # one run is shown as itself, more as a list
    assert {(run["channel"], run["channel_account"]) for run in ([shown] if isinstance(shown, dict) else shown)} <= {
        ("sandbox", None), ("acq_alpha", None), ("acq_alpha", good["id"]), ("acq_beta", None)}
    with unit_of_work() as session:  # one issue for the account and day, however many passes
        assert session.scalar(select(func.count()).select_from(ReconciliationIssue).where(
            ReconciliationIssue.kind == "statement_unavailable",
            ReconciliationIssue.channel_reference.like(f"{revoked}:%"))) == 1


def test_a_daily_run_files_an_unread_statement_under_the_day_asked_for_and_a_new_failure_reopens_it(stack):
    """#14 attack, finding 2: `reconcile --date` of an earlier day whose statement cannot be read is
    an issue (and a run) of that day, not today's; only a daily run that reads that day closes it
    (not today's run, not a near-real-time pass); failing again after it was closed (by a run or by
    an operator) opens it again with the new error, and the command exits 3."""
    from app.services import issues as issue_store
    from app.services import reconcile as recon

    merchant = builders.api(stack.client, "Theirs")
    revoked = builders.revoked_channel_account(merchant.merchant_id, FORGED)
    earlier = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=2)).isoformat()

    result = _daily(day=earlier)
    assert result.exit_code == 3, result.output
    [run] = [run for run in json.loads(result.output) if run["channel_account"] == revoked]
    assert run["date"] == earlier and run["window_start"].startswith(earlier), run
    [issue] = run["issues"]
    assert (issue["channel_reference"], issue["status"]) == (f"{revoked}:{earlier}", "open")
    assert (issue["ours"]["date"], issue["ours"]["mode"]) == (earlier, "daily")
    assert [ref for ref, _, _ in _unread(revoked)] == [f"{revoked}:{earlier}"]  # nothing filed under today

    # Readable again: today's daily run and a near-real-time pass read other days: it stays open.
    _make_good(stack, revoked)
    assert _daily().exit_code == 0
    assert recon.reconcile_recent("sandbox", account=revoked) is not None
    assert [(ref, status) for ref, status, _ in _unread(revoked)] == [(f"{revoked}:{earlier}", "open")]
    assert _daily(day=earlier).exit_code == 0  # the day itself read: closed
    assert [status for _, status, _ in _unread(revoked)] == ["resolved"]

    # Refused again: the same day's issue is open again, with the new failure; the command says so.
    _make_bad(revoked)
    result = _daily(day=earlier)
    assert result.exit_code == 3, result.output
    [(ref, status, theirs)] = _unread(revoked)
    assert (ref, status, theirs["error"]) == (f"{revoked}:{earlier}", "open", "channel_unavailable")
    assert theirs["previously_resolved"]["by"].startswith("reconciliation:recon_")
    assert issue_store.listing(kind="statement_unavailable")[0]["channel_reference"] == f"{revoked}:{earlier}"

    # Resolved by an operator, then failing again: open again (a resolution is not a read).
    [open_issue] = issue_store.listing(kind="statement_unavailable")
    issue_store.resolve(open_issue["id"], "merchant told", "cli:ops")
    assert _daily(day=earlier).exit_code == 3
    assert [status for _, status, _ in _unread(revoked)] == ["open"]
    assert _unread(revoked)[0].theirs["previously_resolved"]["note"] == "merchant told"


def test_a_pass_that_cannot_read_an_account_never_exits_0_even_after_its_issue_was_resolved(stack):
    """`reconcile --recent` prints an unread account: its issue of today is open again however it was
    closed before, and the command exits 3 (the open-issues count includes it)."""
    from app.adapters.redis_conn import get_redis
    from app.services import issues as issue_store
    from app.services import reconcile as recon

    merchant = builders.api(stack.client, "Theirs")
    revoked = builders.revoked_channel_account(merchant.merchant_id, FORGED)
    result = CliRunner().invoke(main, ["reconcile", "--recent", "--channel", "sandbox", "--json"])
    assert result.exit_code == 3, result.output
    [issue] = issue_store.listing(kind="statement_unavailable")
    assert issue["channel_reference"] == f"{revoked}:{_today()}"
    issue_store.resolve(issue["id"], "looked at it", "cli:ops")

    get_redis().delete(recon.LEASE_KEY)
    result = CliRunner().invoke(main, ["reconcile", "--recent", "--channel", "sandbox", "--json"])
    assert result.exit_code == 3, result.output
    assert f"Unread: account {revoked}" in result.stderr and f"{issue['id']} (open)" in result.stderr
    [again] = issue_store.listing(kind="statement_unavailable")
    assert again["id"] == issue["id"] and again["ours"]["mode"] == "continuous"

    # Its key good again, the next pass reads today: a pass's own failure is closed by a pass.
    _make_good(stack, revoked)
    result = CliRunner().invoke(main, ["reconcile", "--recent", "--channel", "sandbox", "--json"])
    assert result.exit_code == 0, result.output
    assert [status for _, status, _ in _unread(revoked)] == ["resolved"]


def test_a_re_run_of_an_old_day_reads_the_accounts_deleted_since(stack):
    """Attack a14 M5: `reconcile --date D` run again long after D still reads the statement of an
    account deleted after D (what it carried may settle on D); one deleted more than 8 days before D
    is not read. The cutoff is measured from D, not from when the command runs."""
    day = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=20)
    start = dt.datetime.combine(day, dt.time())
    merchant = builders.api(stack.client, "Gone")
    after_day = builders.revoked_channel_account(merchant.merchant_id, FORGED + "a",
                                                 deleted_at=start + dt.timedelta(days=1))
    builders.revoked_channel_account(merchant.merchant_id, FORGED + "b", deleted_at=start - dt.timedelta(days=9))
    result = _daily(day=day.isoformat())
    found = json.loads(result.output)  # one run is printed as an object, several as a list
    runs = {run["channel_account"]: run for run in (found if isinstance(found, list) else [found])}
    assert set(runs) == {None, after_day}, result.output
    [issue] = runs[after_day]["issues"]  # read (here: its key refused), not skipped
    assert (issue["issue"], issue["channel_reference"]) == ("statement_unavailable", f"{after_day}:{day}")
