"""``payrouter rules validate|simulate|show|diff|replay|publish|history|rollback`` (the admin UI does the same)."""
from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import click

from app.domain.errors import PayRouterError


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


@click.group("rules")
def rules_group():
    """Rule sets: validate, simulate, show, diff, replay, publish, history, rollback."""


@rules_group.command("validate")
@click.argument("file")
def validate(file):
    """Check a rule file; every problem is listed with its rule id, path and line."""
    from app.services import rules_store as store

    try:
        store.check(_read(file))
    except PayRouterError as exc:
        _fail(exc)
    click.echo(f"{file}: valid")


@rules_group.command("simulate")
@click.argument("file")
@click.argument("payload")
@click.option("--live", is_flag=True, help="as a live-mode operation: only live channels are candidates")
def simulate(file, payload, live):
    """Print the decision FILE would make for PAYLOAD.json (a payment body), as JSON; a test-mode
    operation unless --live."""
    from app.services.routing import Availability
    from app.services.validation import parse_body
    from rules import decide, format
    from rules.engine import CompiledRules

    try:
        ruleset = format.load(_read(file))
        body = parse_body(_read(payload).encode(), "simulate")
    except PayRouterError as exc:
        _fail(exc)
    merchant = body.pop("merchant", None) or {}
    facts = decide.facts_for(body.get("type", "payment"), body["amount"], body["currency"],
                             body.get("payment_method"), body.get("customer"), merchant.get("id"),
                             merchant.get("category"), body.get("metadata"))
    matcher = CompiledRules(ruleset)
    try:
        result = decide.decide(facts, ruleset, matcher, Availability(live),
                               split_key=body.get("reference") or "simulate")
    finally:
        matcher.close()
    click.echo(json.dumps(result.to_dict(), indent=2))


@rules_group.command("publish")
@click.argument("file")
@click.option("--reason", "-m", "--comment", "reason", required=True,
              help="why this change (required; kept in the history and the audit log)")
@click.option("--yes", "-y", "confirm", is_flag=True, help="publish even though it drops rules of the live set")
@click.option("--author", default=None, help="who publishes (default: the OS user)")
def publish(file, reason, confirm, author):
    """Validate, compile-check and make FILE the live rule set; prints its version number. A file that
    drops rules of the live set needs --yes. With PAYROUTER_RULES_APPROVAL=1 it waits for another
    pm/admin to approve it on the admin UI's "Rules" page."""
    from app.services import rules_publishing

    try:
        result = rules_publishing.publish(_read(file), author or getpass.getuser(), reason, confirm_dropped=confirm)
    except rules_publishing.DropsLiveRules as exc:
        for rule_id in exc.extra.get("dropped", []):
            click.echo(f"- {rule_id}  (in the live set, not in {file})", err=True)
        raise click.ClickException(f"{exc.message} — run again with --yes to publish it") from None
    except PayRouterError as exc:
        _fail(exc)
    if result["status"] == "pending":
        click.echo(f"request {result['request']} awaits approval by another pm or admin (admin UI, \"Rules\")")
        return
    click.echo(f"published version {result['version']}")


@rules_group.command("show")
@click.argument("version", type=int, required=False)
@click.option("--merchant", default=None, help="a merchant's rule set (mer_…) instead of the platform's")
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
def diff(file, as_json):
    """What FILE changes against the live rule set, rule by rule (+ added, - removed, ~ changed fields)."""
    from app.services import rules_workspace

    try:
        result = rules_workspace.diff(_read(file))
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
def replay(file, last, as_json):
    """Re-decide the last N operations under FILE and under the live set; count what would change."""
    from app.services import rules_workspace

    try:
        result = rules_workspace.replay(_read(file), last)
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
def history(as_json, with_diff):
    """Who published which version, when and why (newest first)."""
    from app.services import rules_publishing

    rows = rules_publishing.history(limit=200)
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
def rollback(version, reason, actor):
    """Make an earlier VERSION live again."""
    from app.services import rules_publishing

    try:
        rules_publishing.rollback(version, actor or getpass.getuser(), reason)
    except PayRouterError as exc:
        _fail(exc)
    click.echo(f"version {version} is live")


COMMANDS = [rules_group]

if __name__ == "__main__":
    sys.exit(rules_group())
