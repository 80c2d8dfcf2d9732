"""The ``payrouter`` command line: everything an operator scripts."""
from __future__ import annotations

import json
import sys

import click


class _Commands(click.Group):
    """The CLI's one error map: a PayRouterError that a command does not handle itself is its
    message and exit status 1, never a traceback (e.g. ``init`` on secrets stored under another key)."""

    def invoke(self, ctx):
        from app.domain.errors import PayRouterError

        try:
            return super().invoke(ctx)
        except PayRouterError as exc:
            raise click.ClickException(exc.message) from None


@click.group(cls=_Commands)
def main():
    """PayRouter: a self-hostable payment router."""


@main.command()
def init():
    """Create or migrate the schema, load the default channels and rules (safe to run twice)."""
    from app.entrypoints import bootstrap

    summary = bootstrap.init()
    click.echo(json.dumps(summary) if summary else "initialised")


@main.group()
def merchant():
    """Merchants and their API keys."""


@merchant.command("create")
@click.argument("name")
@click.option("--category", default=None, help="merchant category (a rules fact)")
@click.option("--live", is_flag=True, help="issue a sk_live_ key instead of sk_test_")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def merchant_create(name, category, live, as_json):
    """Create a merchant and its first secret key (printed once, never again)."""
    from app.adapters.db import unit_of_work
    from app.services.merchants import create_merchant

    with unit_of_work() as session:
        m, issued = create_merchant(session, name, category, "live" if live else "test")
    if as_json:
        click.echo(json.dumps({"merchant": m.id, "name": m.name, "key_id": issued.key.id, "secret_key": issued.secret}))
    else:
        click.echo(f"merchant {m.id} ({m.name})\nsecret key (shown once): {issued.secret}")


@merchant.command("new-key")
@click.argument("merchant_id")
@click.option("--live", is_flag=True, help="a sk_live_ key: it sees and makes live objects only (default sk_test_)")
def merchant_new_key(merchant_id, live):
    """Issue another secret key for a merchant (printed once, never again)."""
    from app.adapters.db import unit_of_work
    from app.adapters.models import Merchant
    from app.services.merchants import issue_key

    with unit_of_work() as session:
        if session.get(Merchant, merchant_id) is None:
            raise click.ClickException(f"no such merchant {merchant_id}")
        issued = issue_key(session, merchant_id, "live" if live else "test")
    click.echo(f"key {issued.key.id}\nsecret key (shown once): {issued.secret}")


@merchant.command("revoke-key")
@click.argument("key_id")
def merchant_revoke_key(key_id):
    """Revoke a secret key: it stops working at once."""
    from app.adapters.db import unit_of_work
    from app.domain.errors import NotFound
    from app.services.merchants import revoke_key

    try:
        with unit_of_work() as session:
            revoke_key(session, key_id)
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"revoked {key_id}")


@main.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8000, type=int)
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="worker processes (default: PAYROUTER_SERVE_WORKERS, 2)")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="threads per worker (default: PAYROUTER_SERVE_THREADS, 8)")
def serve(host, port, workers, threads):
    """The HTTP API and admin UI under gunicorn."""
    from app.adapters import metrics_dir
    from app.config import get_config
    from app.entrypoints.server import run

    config = get_config()
    metrics_dir.prepare(config.var_dir, clean=True)  # before prometheus_client is imported (app.adapters.metrics)
    _wait_for_database(config.startup_database_wait)
    _refuse_live_channels_without_secrets()
    run(host, port, workers=workers or config.serve_workers, threads=threads or config.serve_threads)


def _wait_for_database(seconds: float) -> None:
    """Before a server or worker starts: the database reachable within ``seconds``, else exit 1 saying so."""
    from app.adapters.db import DatabaseUnreachable, wait_for_database

    try:
        wait_for_database(seconds, lambda words: click.echo(f"payrouter: {words}", err=True))
    except DatabaseUnreachable as exc:
        raise click.ClickException(str(exc)) from None


def _refuse_live_channels_without_secrets() -> None:
    """Before the server starts: a live channel whose secret is not in its environment variable
    stops the command with the reason (exit 1)."""
    from app.adapters.channels_runtime import check_live_channels
    from channels.config import ChannelConfigError

    try:
        check_live_channels()
    except ChannelConfigError as exc:
        raise click.ClickException(exc.message) from None


@main.command()
@click.argument("queues", nargs=-1)
@click.option("--burst", is_flag=True, help="stop when the queues are empty")
def worker(queues, burst):
    """RQ worker(s) for the given queues (none named: all of them)."""
    from app.config import get_config
    from app.entrypoints.worker import run_worker

    _wait_for_database(get_config().startup_database_wait)
    run_worker(list(queues), burst=burst)  # refuses to start as serve does


@main.command()
@click.option("--port", default=8000, type=int)
@click.option("--sandbox-port", default=8090, type=int)
def demo(port, sandbox_port):
    """Everything on the embedded defaults, seeded, on one command."""
    from app.entrypoints.demo import run_demo

    run_demo(port=port, sandbox_port=sandbox_port)


@main.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8090, type=int)
def sandbox(host, port):
    """The sandbox channel: a simulated PSP over HTTP with async callbacks and statements. It serves
    the channels file's sandbox channels and the router's stored ones, re-read while it runs (a
    sandbox channel added by `channels import` is served without a restart)."""
    from app.adapters import channel_definitions
    from app.adapters.channel_secrets import StoredChannelSecrets
    from app.config import get_config
    from channels.sandbox.accounts import SECRET_NAME
    from channels.sandbox.server import run

    config = get_config()
    stored = StoredChannelSecrets(config)
    # Merchant accounts' keys are made under a secret kept in the database: valid after a restart.
    run(host=host, port=port, channels_path=config.channels_file, env=config.channel_env, stored=stored,
        auth_expiry_s=config.sandbox_auth_expiry_s, definitions=lambda: channel_definitions.readable_specs(config),
        accounts_secret=lambda: stored.named(SECRET_NAME))


@main.group(invoke_without_command=True)
@click.option("--channel", "channel_id", help="channel id from the channels file")
@click.option("--date", "day", help="YYYY-MM-DD (UTC): reconcile this whole day")
@click.option("--recent", is_flag=True, help="run a near-real-time pass now (every channel unless --channel)")
@click.option("--list", "listing", is_flag=True, help="show the newest stored runs")
@click.option("--issues", "only_issues", is_flag=True, help="with --list: only runs that found issues")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reconcile(ctx, channel_id, day, recent, listing, only_issues, as_json):
    """Compare a channel's statement with our records: a whole day (--channel --date), the minutes
    since the previous near-real-time pass (--recent), or show stored runs (--list). Status
    queries are queued for operations we still wait on; every run is stored.

    Exit status (cron and alerting key on it): 0 clean; 3 open issues found, a merchant channel
    account whose statement could not be read among them (statement_unavailable: the others are
    still reconciled), or, over every channel, a channel reconciled before that no definition here
    names any more with outcomes not compared (channel_not_reconciled, until resolved); 1 an error
    (a channel's own statement unreadable, a bad channel, the database), said after every other
    channel and account ran. --channel X of a channel this process does not run (pruned from the
    definitions, or not buildable here): 3 with its open channel_not_reconciled issue named, else
    1 saying why (not a stored channel, or why it cannot be built here).
    `reconcile issues` lists the open issues, `reconcile resolve ISSUE --note` resolves one."""
    import datetime as dt

    from app.domain.errors import PayRouterError
    from app.services import reconcile as recon

    if ctx.invoked_subcommand is not None:
        return
    if sum(map(bool, (day, recent, listing))) != 1:
        raise click.UsageError("give exactly one of --date, --recent, --list")
    if listing:
        _show_runs(recon.recent_runs(channel_id, with_issues=only_issues)[0], as_json,
                   empty="No stored runs" + (" with issues" if only_issues else "")
                   + (f" of channel {channel_id}" if channel_id else "") + ".")
        return
    if day and not channel_id:
        raise click.UsageError("--date needs --channel")
    try:
        date = dt.date.fromisoformat(day) if day else None
    except ValueError:
        raise click.BadParameter("use YYYY-MM-DD", param_hint="--date") from None
    from app.adapters.channels_runtime import registry
    from channels.base import OperationNotSupported

    if channel_id and not recon.runs_here(channel_id):
        _not_running(ctx, channel_id)
    runs, unread, errors = [], [], []
    # Each channel's platform account, then each merchant channel account on it (recon.each_account):
    # one that fails is said and the others still run.
    for cid in [channel_id] if channel_id else registry().ids():
        try:
            if date:
                found = recon.each_account(cid, "daily", lambda account, cid=cid: recon.reconcile(cid, date, account),
                                           date)
            else:
                found = recon.each_account(cid, "continuous",
                                           lambda account, cid=cid: recon.reconcile_recent(cid, account=account))
        except OperationNotSupported as exc:
            if channel_id:
                raise click.ClickException(exc.message) from None
            continue  # a channel that serves no statement, in a pass over them all
        runs += found[0]
        unread += found[1]
        errors += found[2]
    gone = []
    if not channel_id:  # channels reconciled before that no definition here names any more: said, not skipped
        try:
            gone = [issue for issue in recon.unreconciled_channels() if issue["status"] == "open"]
        except Exception as exc:  # noqa: BLE001 - the database: an error, after the channels ran
            errors.append(("channels no longer run", exc))
    if len(errors) == 1 and channel_id and errors[0][0] == channel_id and not runs and not unread:
        exc = errors[0][1]  # the one thing asked for failed: its message, as every command's error
        raise click.ClickException(exc.message if isinstance(exc, PayRouterError) else repr(exc))
    for name, exc in errors:
        click.echo(f"Error: {name}: {exc.message if isinstance(exc, PayRouterError) else repr(exc)}", err=True)
    shown = [recon.summary(run) for run in runs]
    _show_runs(shown, as_json)
    for issue in unread:
        if date is None:  # a daily run shows it; a near-real-time pass records the issue alone
            ours, theirs = issue["ours"], issue["theirs"]
            click.echo(f"Unread: account {ours['channel_account']} (merchant "
                       f"{ours['merchant']}): its statement cannot be read: {theirs['message']} — issue "
                       f"{issue['id']} ({issue['status']})", err=as_json)
    for issue in gone:
        ours = issue["ours"]
        click.echo(f"Not reconciled: channel {ours['channel']}: {issue['theirs']['message']}; "
                   f"{ours['attempts']} attempt(s) recorded since {ours['since']} not compared — issue "
                   f"{issue['id']} ({issue['status']})", err=True)
    if errors:
        ctx.exit(1)
    if any(out["open_issues"] for out in shown) or unread or gone:  # an account unread now: never 0
        ctx.exit(RECONCILE_OPEN_ISSUES)


def _not_running(ctx, channel_id: str) -> None:
    """``reconcile --channel X`` of a channel this process does not run: its statement cannot be
    read. Reconciled before with outcomes never compared (pruned from the definitions, or stored
    but not buildable here): its open ``channel_not_reconciled`` issue is said, exit 3, as a pass
    over every channel says it. Otherwise an error naming why (exit 1): stored but not buildable
    here, or not a stored channel at all (nothing of it left to compare)."""
    from app.adapters.channels_runtime import diagnose
    from app.services import reconcile as recon

    gone = [issue for issue in recon.unreconciled_channels()
            if issue["ours"]["channel"] == channel_id and issue["status"] == "open"]
    for issue in gone:
        ours = issue["ours"]
        click.echo(f"Not reconciled: channel {channel_id}: {issue['theirs']['message']}; {ours['attempts']} "
                   f"attempt(s) recorded since {ours['since']} not compared — issue {issue['id']} ({issue['status']}). "
                   "Compare them with the PSP and `reconcile resolve` it, or import the channel again: its runs "
                   "then compare them and close it", err=True)
    if gone:
        ctx.exit(RECONCILE_OPEN_ISSUES)
    why = diagnose().get(channel_id)
    if why is not None:
        raise click.ClickException(f"channel {channel_id} is stored but this process cannot build it, so its "
                                   f"statement cannot be read here: {why}")
    raise click.ClickException(f"no such channel {channel_id}: it is not among the stored channel definitions "
                               "(`payrouter channels list`; pruned?), and nothing of it is left to compare "
                               "(no open channel_not_reconciled issue)")


# The exit status of a run that found open issues, a merchant channel account's statement that could
# not be read among them (statement_unavailable): 1 stays an error (docs/operations.md).
RECONCILE_OPEN_ISSUES = 3


@reconcile.command("resolve")
@click.argument("issue_id")
@click.option("--note", required=True, help="what was found and done (kept with the issue and in the audit log)")
@click.option("--actor", default=None, help="who (default: the OS user)")
@click.option("--settle", type=click.Choice(["succeeded", "failed"]), default=None,
              help="also settle the issue's operation, still processing (e.g. one the channel forgot)")
@click.option("--json", "as_json", is_flag=True)
def reconcile_resolve(issue_id, note, actor, settle, as_json):
    """Resolve reconciliation issue ISSUE_ID (ri_…) with a note; refused if unknown or already resolved."""
    import getpass

    if settle:  # the operation it settles counts in payrouter_operations_total, beside the servers' counts
        from app.adapters import metrics_dir
        from app.config import get_config

        metrics_dir.prepare(get_config().var_dir)  # before prometheus_client is imported (app.adapters.metrics)
    from app import context
    from app.domain.errors import PayRouterError
    from app.services import issues

    try:
        with context.bound():
            resolved = issues.resolve(issue_id, note, "cli:" + (actor or getpass.getuser()), settle)
    except PayRouterError as exc:
        raise click.ClickException(exc.message) from None
    if as_json:
        click.echo(json.dumps(resolved, indent=2))
    else:
        click.echo(f"resolved {resolved['id']} ({resolved['issue']} {resolved['channel_reference']}) by "
                   f"{resolved['resolved_by']} at {resolved['resolved_at']}: {resolved['note']}")


@reconcile.command("issues")
@click.option("--channel", "channel_id", default=None)
@click.option("--all", "everything", is_flag=True, help="resolved issues too")
@click.option("--kind", default=None, help="only this class (missing_in_payrouter, status_mismatch, fee_mismatch, …)")
@click.option("--json", "as_json", is_flag=True)
def reconcile_issues(channel_id, everything, kind, as_json):
    """Reconciliation issues, newest first: the open ones (to resolve), or --all."""
    from app.services import issues

    found = issues.listing(channel_id, status=None if everything else issues.OPEN, kind=kind)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo(("No issues" if everything else "No open issues") + (f" of kind {kind}" if kind else "")
                   + (f" on channel {channel_id}" if channel_id else "") + ".")
    for issue in found:
        click.echo(f"{issue['id']}  {issue['status']:<8} {issue['channel']:<12} {issue['issue']:<22} "
                   f"{issue['channel_reference']}  ours={issue['ours']}  theirs={issue['theirs']}"
                   + (f"  resolved by {issue['resolved_by']}: {issue['note']}" if issue["note"] else ""))


@reconcile.command("export")
@click.argument("run_id")
def reconcile_export(run_id):
    """A run's issues (recon_…) as CSV on standard output, each with its status now."""
    import sys

    from app.domain.errors import PayRouterError
    from app.services import reconcile as recon

    try:
        recon.export_csv(run_id, sys.stdout)
    except PayRouterError as exc:
        raise click.ClickException(exc.message) from None


def _show_runs(runs: list[dict], as_json: bool, empty: str | None = None) -> None:
    """Runs as text (or JSON); ``empty``: what the text says when there are none."""
    if as_json:
        click.echo(json.dumps(runs if len(runs) != 1 else runs[0], indent=2))
        return
    if not runs and empty:
        click.echo(empty)
    for out in runs:
        when = out["date"] if out["mode"] == "daily" else f"{out['window_start']} – {out['window_end']}"
        account = f" account {out['channel_account']}" if out.get("channel_account") else ""
        click.echo(f"{out['channel']}{account} {out['mode']} {when}: {out['statement_lines']} statement lines, "
                   f"{out['matched']} matched, {out['issue_count']} issue(s) ({out['open_issues']} open), "
                   f"channel fees {out['channel_fees']}")
        for issue in out["issues"]:
            click.echo(f"  {issue.get('id', '-'):<27} {issue['status']:<8} {issue['issue']:<22} "
                       f"{issue['channel_reference']}  ours={issue.get('ours')}  theirs={issue.get('theirs')}")
        if out["issues_truncated"]:
            more = out['issue_count'] - len(out['issues'])
            click.echo(f"  … and {more} more: payrouter reconcile export {out['id']}")


@main.group()
def report():
    """Reports read from the ledger."""


@report.command("settlement")
@click.option("--date", "day", required=True, help="the UTC day, YYYY-MM-DD")
@click.option("--merchant", "merchant_id", default=None, help="one merchant's id (default: every merchant)")
@click.option("--format", "fmt", type=click.Choice(["csv", "table"]), default="table", show_default=True)
def report_settlement(day, merchant_id, fmt):
    """A day's settlement per merchant, mode, currency and channel: count, gross, fees, refunds,
    disputes, net (docs/api.md, Settlement report)."""
    from app.adapters.db import read_only
    from app.adapters.models import Merchant
    from app.services import reports

    parsed = reports.parse_day(day, "--date")
    with read_only() as session:
        if merchant_id is not None and session.get(Merchant, merchant_id) is None:
            raise click.ClickException(f"no such merchant {merchant_id}")
        rows = reports.settlement(session, parsed, merchant_id)
    click.echo(reports.to_csv(rows, with_merchant=True) if fmt == "csv" else reports.to_table(rows), nl=fmt != "csv")


@main.group("secrets")
def secrets_group():
    """Secrets stored encrypted (webhook endpoint and generated channel secrets)."""


@secrets_group.command("rotate")
@click.option("--old-key-env", "old_key_envs", multiple=True, metavar="NAME",
              help="an environment variable holding a previous PAYROUTER_SECRET_KEY (repeatable); "
                   "PAYROUTER_PREVIOUS_SECRET_KEY is always tried")
@click.option("--old-key-file", "old_key_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="a file holding a previous key, e.g. var/secret_key of an install that had none (repeatable)")
def secrets_rotate(old_key_envs, old_key_files):
    """Re-encrypt every stored secret under the current PAYROUTER_SECRET_KEY (all or nothing)."""
    import os
    from pathlib import Path

    from app.adapters.crypto import SecretUndecryptable
    from app.services.secret_rotation import rotate

    old_keys = []
    for name in old_key_envs:
        if not os.environ.get(name):
            raise click.UsageError(f"environment variable {name} is not set")
        old_keys.append(os.environ[name])
    old_keys += [Path(path).read_text().strip() for path in old_key_files]
    try:
        counts = rotate(tuple(old_keys))
    except SecretUndecryptable as exc:
        raise click.ClickException(f"{exc.message}; nothing was changed") from None
    click.echo(json.dumps(counts))


def _register_groups() -> None:
    """Command groups that live beside their modules: rules, switches, webhooks, console users."""
    from app.entrypoints import ops_cli, rules_cli, users_cli

    for command in rules_cli.COMMANDS + ops_cli.COMMANDS + users_cli.COMMANDS:
        main.add_command(command)


_register_groups()


if __name__ == "__main__":
    sys.exit(main())
