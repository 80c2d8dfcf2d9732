"""``payrouter rules validate|simulate|show|diff|replay|publish|history|rollback`` (the admin UI does the same)."""
from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import click

from app.domain.errors import PayRouterError
from app.domain.kinds import OperationKind


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None


def _fail(exc: PayRouterError) -> None:
    problems = getattr(exc, "problems", None)
    if problems:
        for problem in problems:
            click.echo(str(problem), err=True)
        raise click.ClickException(f"{len(problems)} problem(s)")
    raise click.ClickException(exc.message)


_MERCHANT = click.option("--merchant", default=None, metavar="MER_ID",
                         help="a merchant's own rule set (mer_…) instead of the platform's")


@click.group("rules")
def rules_group():
    """Rule sets: validate, simulate, show, diff, replay, publish, history, rollback. Each takes
    --merchant mer_… for that merchant's own set, decided beside the platform's."""


@rules_group.command("validate")
@click.argument("file")
@_MERCHANT
def validate(file, merchant):
    """Check a rule file; every problem is listed with its rule id, path and line. With --merchant, also
    what a merchant's set may not say: a fee, or a channel that merchant cannot use."""
    from app.services import rules_store as store

    try:
        store.check(_read(file), store.merchant_id(merchant))
    except PayRouterError as exc:
        _fail(exc)
    click.echo(f"{file}: valid")


@rules_group.command("simulate")
@click.argument("file")
@click.argument("payload")
@click.option("--kind", type=click.Choice(OperationKind.routed()), default=None,
              help="the operation kind (default: the payload's kind, else payment); a withdrawal's payload "
                   "names its destination, a refund's neither method nor destination")
@_MERCHANT
@click.option("--as", "as_merchant", default=None, metavar="MER_ID",
              help="decide as this merchant's operation (its own live set applies); default: --merchant")
@click.option("--live", is_flag=True, help="as a live-mode operation: only live channels are candidates")
def simulate(file, payload, kind, merchant, as_merchant, live):
    """Print the decision FILE would make for PAYLOAD.json (a body of the operation kind), as JSON, with
    the live sets around it (FILE in place of the platform's set, or of --merchant's own); a test-mode
    operation unless --live. "explain" says which rule routed, set the fee and declined."""
    from app.services import rules_workspace
    from app.services.validation import parse_body

    try:
        body = parse_body(_read(payload).encode(), "simulate")
        named = body.pop("kind", None) or body.pop("type", None)
        body.pop("type", None)
        result = rules_workspace.simulate(_read(file), kind or named or "payment", body, as_merchant,
                                          livemode=live, draft_owner=merchant)
    except PayRouterError as exc:
        _fail(exc)
    click.echo(json.dumps(result["draft"], indent=2))


@rules_group.command("publish")
@click.argument("file")
@click.option("--reason", "-m", "--comment", "reason", required=True,
              help="why this change (required; kept in the history and the audit log)")
@click.option("--yes", "-y", "confirm", is_flag=True, help="publish even though it drops rules of the live set")
@click.option("--author", default=None, help="who publishes (default: the OS user)")
@_MERCHANT
def publish(file, reason, confirm, author, merchant):
    """Validate, compile-check and make FILE the live rule set; prints its version number. A file that
    drops rules of the live set needs --yes. With PAYROUTER_RULES_APPROVAL=1 it waits for another
    pm/admin to approve it on the admin UI's "Rules" page."""
    from app.services import rules_publishing

    source = _read(file)
    try:
        result = rules_publishing.publish(source, author or getpass.getuser(), reason, confirm_dropped=confirm,
                                          merchant=merchant)
    except rules_publishing.DropsLiveRules as exc:
        for rule_id in exc.extra.get("dropped", []):
            click.echo(f"- {rule_id}  (in the live set, not in {file})", err=True)
        raise click.ClickException(f"{exc.message} — run again with --yes to publish it") from None
    except PayRouterError as exc:
        _fail(exc)
    if result["status"] == "pending":
        click.echo(f"request {result['request']} awaits approval by another pm or admin (admin UI, \"Rules\")")
    else:
        owner = f" of {merchant}'s rule set" if merchant else ""
        click.echo(f"published version {result['version']}{owner}")
    _warn_channels_not_run(source)


UNBUILT_EXIT = 3  # published, but a channel it names is not run by every live process


def _warn_channels_not_run(source: str) -> None:
    """Exit 3 (the rule set is published: nothing to undo) naming each channel the set routes to that
    a live process runs without (it could not build its stored definition): those processes drop it
    from routing as ``unknown_channel`` until they can. Redis down: said, exit 0."""
    from app.services import rules_publishing

    lacking = rules_publishing.channels_not_run_words(source)
    if lacking is None:
        click.echo("note: the processes' channel builds could not be read (Redis): not checked that they run "
                   "the channels this set names", err=True)
        return
    if not lacking:
        return
    for words in lacking:
        click.echo(f"warning: {words} (payrouter channels list, /readyz with the ops token say why)", err=True)
    raise SystemExit(UNBUILT_EXIT)


@rules_group.command("show")
@click.argument("version", type=int, required=False)
@_MERCHANT
def show(version, merchant):
    """The live rule set (or VERSION) as YAML."""
    from app.services import rules_workspace

    try:
        shown = rules_workspace.show(version, merchant)
    except PayRouterError as exc:
        _fail(exc)
    click.echo(f"# version {shown['version']}" + (" (live)" if shown["version"] == shown["live_version"] else ""))
    click.echo(shown["source"].rstrip("\n"))


@rules_group.command("diff")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True)
@_MERCHANT
def diff(file, as_json, merchant):
    """What FILE changes against the live rule set, rule by rule (+ added, - removed, ~ changed fields)."""
    from app.services import rules_workspace

    try:
        result = rules_workspace.diff(_read(file), merchant)
    except PayRouterError as exc:
        _fail(exc)
    if result["problems"]:
        for problem in result["problems"]:
            click.echo(problem["text"], err=True)
    if as_json:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=2))
    else:
        click.echo(f"against live version {result['against']}")
        click.echo(result["text"])


@rules_group.command("replay")
@click.argument("file")
@click.option("--last", "last", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="how many of the most recent operations")
@click.option("--json", "as_json", is_flag=True)
@_MERCHANT
def replay(file, last, as_json, merchant):
    """Re-decide the last N operations under FILE and under the live set; count what would change. With
    --merchant, FILE is that merchant's own set and only its operations are replayed."""
    from app.services import rules_replay

    try:
        result = rules_replay.replay(_read(file), last, merchant)
    except PayRouterError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    counts = result["counts"]
    click.echo(f"replayed {result['replayed']} operation(s) against live version {result['live_version']}: "
               f"{result['changed']} would change (channel {counts['channel']}, fee {counts['fee']}, "
               f"decline {counts['decline']})")
    for what, items in result["examples"].items():
        for ex in items:
            live, draft = ex["live"], ex["draft"]
            click.echo(f"  {what:<8} {ex['operation']} {ex['kind']} {ex['amount']} {ex['currency']}: "
                       f"{_brief(live)} → {_brief(draft)}")


def _brief(summary: dict) -> str:
    if summary["outcome"] == "decline":
        return f"decline {summary['decline_code']}"
    return f"{summary['channel']} fee {summary['fee']}"


@rules_group.command("history")
@click.option("--json", "as_json", is_flag=True)
@click.option("--diff", "with_diff", is_flag=True, help="each version's diff to the one live before it")
@_MERCHANT
def history(as_json, with_diff, merchant):
    """Who published which version, when and why (newest first)."""
    from app.services import rules_publishing

    try:
        rows = rules_publishing.history(merchant, limit=200)
    except PayRouterError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.items() if k != "diff_text"} for r in rows], indent=2))
        return
    for row in rows:
        approved = f" (approved by {row['approved_by']})" if row.get("approved_by") else ""
        click.echo(f"{row['version']:>5}  {row['action']:<8} {row['at']}  {row['actor']}{approved}  "
                   f"{row['reason'] or ''}  [{row['diff']['summary']}]")
        if with_diff:
            click.echo("\n".join("        " + line for line in row["diff_text"].splitlines()))


@rules_group.command("rollback")
@click.argument("version", type=int)
@click.option("--reason", "-m", required=True, help="why (required; kept in the history and the audit log)")
@click.option("--actor", default=None)
@_MERCHANT
def rollback(version, reason, actor, merchant):
    """Make an earlier VERSION live again (with --merchant, a version of that merchant's set), checked
    as publishing its text: refused naming a channel no longer stored; exit 3 naming a channel a live
    process runs without."""
    from app.services import rules_publishing

    try:
        result = rules_publishing.rollback(version, actor or getpass.getuser(), reason, merchant)
    except PayRouterError as exc:
        _fail(exc)
    click.echo(f"version {version} is live")
    _warn_channels_not_run(result["source"])


COMMANDS = [rules_group]

if __name__ == "__main__":
    sys.exit(rules_group())
