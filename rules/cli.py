"""``payrouter rules validate|simulate|publish|history|rollback`` (the admin UI does the same)."""
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
    """Rule sets: validate, simulate, publish, history, rollback."""


@rules_group.command("validate")
@click.argument("file")
def validate(file):
    """Check a rule file; every problem is listed with its rule id, path and line."""
    from rules import store

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
    from app.api.validation import parse_body
    from app.services.routing import Availability
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
@click.option("--author", default=None, help="who publishes (default: the OS user)")
@click.option("--comment", "-m", default=None)
def publish(file, author, comment):
    """Validate, compile-check and make FILE the live rule set; prints its version number."""
    from rules import store

    try:
        version = store.publish_and_announce(_read(file), author or getpass.getuser(), comment)
    except PayRouterError as exc:
        _fail(exc)
    click.echo(f"published version {version}")


@rules_group.command("history")
@click.option("--json", "as_json", is_flag=True)
def history(as_json):
    """Who published which version, when (newest first)."""
    from app.db import unit_of_work
    from rules import store

    with unit_of_work() as session:
        rows = store.history(session)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['version']:>5}  {row['action']:<8} {row['at']}  {row['actor']}  {row['reason'] or ''}")


@rules_group.command("rollback")
@click.argument("version", type=int)
@click.option("--actor", default=None)
@click.option("--reason", default=None)
def rollback(version, actor, reason):
    """Make an earlier VERSION live again."""
    from rules import store

    try:
        store.rollback_and_announce(version, actor or getpass.getuser(), reason)
    except PayRouterError as exc:
        _fail(exc)
    click.echo(f"version {version} is live")


COMMANDS = [rules_group]

if __name__ == "__main__":
    sys.exit(rules_group())
