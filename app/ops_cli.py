"""Operator commands added to the ``payrouter`` CLI: degradation switches and webhooks."""
from __future__ import annotations

import getpass
import json

import click


def _fail(exc) -> click.ClickException:
    return click.ClickException(getattr(exc, "message", str(exc)))


@click.group("switch")
def switch():
    """Degradation switches: webhooks, read_only, channel:<id>, operation:<type>."""


@switch.command("set")
@click.argument("name")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--reason", required=True, help="why (kept in the audit log)")
@click.option("--actor", default=None, help="who (default: the OS user)")
def switch_set(name, state, reason, actor):
    """Turn switch NAME on (degraded) or off; audited; seen by every process within 2 s."""
    from app import context, switches
    from app.domain.errors import PayRouterError

    try:
        with context.bound():
            after = switches.set(name, state == "on", "cli:" + (actor or getpass.getuser()), reason)
    except PayRouterError as exc:
        raise _fail(exc) from None
    click.echo(json.dumps(after))


@switch.command("list")
@click.option("--json", "as_json", is_flag=True)
def switch_list(as_json):
    """Every switch that was ever set, and its state."""
    from app import switches

    rows = switches.all()
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(f"{row['name']:<32} {'ON ' if row['on'] else 'off'} {row['updated_at']} "
                   f"{row['updated_by'] or ''}: {row['reason'] or ''}")


@click.group("webhooks")
def webhooks():
    """Outgoing webhooks: relay the outbox, redeliver events."""


@webhooks.command("relay")
def webhooks_relay():
    """One relay pass: unrelayed events → deliveries → jobs; re-queue due and lost deliveries."""
    from app import context
    from app.webhooks import relay

    with context.bound():
        click.echo(json.dumps(relay.run_once()))


@webhooks.command("redeliver")
@click.argument("event_id")
@click.option("--endpoint", default=None, help="only this endpoint (we_…); default: every subscribed endpoint")
def webhooks_redeliver(event_id, endpoint):
    """Send event EVENT_ID again."""
    from app import context
    from app.db import unit_of_work
    from app.domain.errors import PayRouterError
    from app.models import Event
    from app.webhooks import deliveries, relay

    try:
        with context.bound(), unit_of_work() as session:
            event = session.get(Event, event_id)
            if event is None:
                raise click.ClickException(f"no such event {event_id}")
            created = deliveries.redeliver(session, event.merchant_id, event_id, endpoint)
    except PayRouterError as exc:
        raise _fail(exc) from None
    relay.sweep(event_id=event_id)
    click.echo(json.dumps([{"id": d["id"], "webhook_endpoint": d["webhook_endpoint"]} for d in created]))


COMMANDS = [switch, webhooks]
