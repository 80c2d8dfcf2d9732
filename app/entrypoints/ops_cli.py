"""Operator commands added to the ``payrouter`` CLI, named by their outcome (contract §5):
``channel disable|enable ID``, ``channel open-circuit|close-circuit ID``, ``operation pause|resume
KIND``, ``webhooks pause|resume``, ``read-only on|off``, each with ``--reason``; ``switch list``
and ``switch history`` in words; ``channels list``; the webhooks outbox. ``switch set NAME on|off``
stays as the old spelling (``on`` = degraded)."""
from __future__ import annotations

import functools
import getpass
import json

import click

from app.domain.kinds import OperationKind


def _fail(exc) -> click.ClickException:
    return click.ClickException(getattr(exc, "message", str(exc)))


def _actor(actor: str | None) -> str:
    return "cli:" + (actor or getpass.getuser())


def _change(command):
    """An audited change: ``--reason`` (required), ``--actor``, ``--json``; prints the outcome in
    words (``command`` returns it as a dict with ``words``), a refused change as an error."""
    @click.option("--reason", required=True, help="why (required; kept in the history and the audit log)")
    @click.option("--actor", default=None, help="who (default: the OS user)")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @functools.wraps(command)
    def run(*args, reason, actor, as_json, **kwargs):
        from app import context
        from app.domain.errors import PayRouterError

        try:
            with context.bound():
                outcome = command(*args, reason=reason, actor=_actor(actor), **kwargs)
        except PayRouterError as exc:
            raise _fail(exc) from None
        click.echo(json.dumps(outcome) if as_json else outcome["words"])
    return run


@click.group("switch")
def switch():
    """Degradation switches in words: list, history (and the old ``set``)."""


@switch.command("set")
@click.argument("name")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--reason", required=True, help="why (kept in the audit log)")
@click.option("--actor", default=None, help="who (default: the OS user)")
def switch_set(name, state, reason, actor):
    """The old spelling: turn switch NAME (webhooks, read_only, channel:<id>, operation:<kind>) on
    (degraded: channel disabled, operation or webhooks paused, read-only on) or off. Prefer
    ``channel disable|enable``, ``operation pause|resume``, ``webhooks pause|resume``, ``read-only on|off``."""
    from app import context
    from app.domain.errors import PayRouterError
    from app.services import switches

    try:
        with context.bound():
            after = switches.set(name, state == "on", _actor(actor), reason)
    except PayRouterError as exc:
        raise _fail(exc) from None
    click.echo(json.dumps(after))


@switch.command("list")
@click.option("--json", "as_json", is_flag=True)
def switch_list(as_json):
    """Each switch in words: "Channel acq_alpha: disabled since …, by …, because …"."""
    from app.services import switchboard

    rows = switchboard.board()
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(row["words"])


@switch.command("history")
@click.argument("name", required=False)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
def switch_history(name, limit, as_json):
    """Switch changes, newest first (only switch NAME's, e.g. channel:acq_alpha, if given)."""
    from app.domain.errors import PayRouterError
    from app.services import switchboard

    try:
        rows = switchboard.history(name, limit)
    except PayRouterError as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(row["words"])


@click.group("channel")
def channel():
    """One channel: disable or enable it; open or close its circuit by hand."""


@channel.command("disable")
@click.argument("channel_id")
@_change
def channel_disable(channel_id, *, reason, actor):
    """Disable channel CHANNEL_ID: routing drops it (switched_off) in every process within 2 s."""
    from app.services import switchboard

    return switchboard.disable_channel(channel_id, actor, reason)


@channel.command("enable")
@click.argument("channel_id")
@_change
def channel_enable(channel_id, *, reason, actor):
    """Enable channel CHANNEL_ID again."""
    from app.services import switchboard

    return switchboard.enable_channel(channel_id, actor, reason)


@channel.command("open-circuit")
@click.argument("channel_id")
@_change
def channel_open_circuit(channel_id, *, reason, actor):
    """Open CHANNEL_ID's circuit by hand: routing drops it (circuit_open) until it is closed."""
    from app.services import channels

    circuit = channels.open_circuit(channel_id, actor, reason)
    return {"channel": channel_id, **circuit, "words": f"Circuit of {channel_id}: {channels.circuit_words(circuit)}"}


@channel.command("close-circuit")
@click.argument("channel_id")
@_change
def channel_close_circuit(channel_id, *, reason, actor):
    """Close CHANNEL_ID's circuit, opened by hand or by the breaker."""
    from app.services import channels

    circuit = channels.close_circuit(channel_id, actor, reason)
    return {"channel": channel_id, **circuit, "words": f"Circuit of {channel_id}: {channels.circuit_words(circuit)}"}


@click.group("channels")
def channels_group():
    """The channels: list them with their health, import definitions live."""


@channels_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def channels_list(as_json):
    """Each stored channel: mode, switch, circuit, and over the last 15 minutes its calls, success rate
    and p95 latency. A definition this process cannot build (its environment lacks a ${VAR}, an adapter
    package is not installed here) is listed all the same, marked with why."""
    from app.services import channels

    rows = channels.board()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'CHANNEL':<16} {'MODE':<5} {'ENABLED':<8} {'CIRCUIT':<10} {'CALLS':>6} {'SUCCESS':>8} "
               f"{'P95 MS':>7}  (last {rows[0]['window_minutes'] if rows else 15} min)")
    for row in rows:
        rate = f"{row['success_rate'] * 100:.1f}%" if row["success_rate"] is not None else "-"
        p95 = str(row["p95_ms"]) if row["p95_ms"] is not None else "-"
        circuit = row["circuit"]["state"] + ("*" if row["circuit"]["manual"] else "")
        mark = "!" if row["build_error"] else ""
        click.echo(f"{row['id'] + mark:<16} {row['mode']:<5} {'yes' if row['enabled'] else 'NO':<8} {circuit:<10} "
                   f"{row['volume']:>6} {rate:>8} {p95:>7}")
    for row in rows:
        if row["circuit"]["state"] != "closed" or not row["enabled"]:
            click.echo(f"  {row['switch']}; circuit {row['circuit']['words']}")
    if any(row["circuit"]["manual"] for row in rows):
        click.echo("  * opened by hand")
    for row in rows:
        if row["build_error"]:
            click.echo(f"  ! {row['id']} cannot be built in this process (the servers may): {row['build_error']}")


# `channels import` exit codes (docs/operations.md): 0 stored and built by every live process (or
# --wait 0: stored), 1 refused (nothing stored), 3 stored but at least one live process could not
# build all of it (it runs the stored channels it can build, without the others), 4 stored but not
# confirmed in time (a live process did not report the new version within --wait, or Redis did not
# answer), 5 refused: --prune would remove a channel still carrying operations not final, open
# disputes or live merchant channel accounts (--force overrides), 6 refused: a channel with live merchant channel
# accounts moves to another host (--allow-host-change overrides). Refused: nothing stored.
IMPORT_BUILD_FAILED = 3
IMPORT_UNCONFIRMED = 4
IMPORT_PRUNE_REFUSED = 5
IMPORT_HOST_CHANGE_REFUSED = 6


@channels_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--prune", is_flag=True, help="remove stored channels the file leaves out (refused while the live "
                                            "rules route to one)")
@click.option("--force", is_flag=True, help="with --prune: remove channels still carrying operations not final "
                                            "(processing, requires_action, requires_capture), open disputes or "
                                            "live merchant channel accounts (audited with what they carried)")
@click.option("--allow-host-change", is_flag=True, help="let a channel with live merchant channel accounts move to "
                                                        "another host (their credentials go there; audited)")
@click.option("--reason", default=None, help="why (kept in the audit log)")
@click.option("--actor", default=None, help="who (default: the OS user)")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="seconds to wait for every live process to report it built the new definitions "
                   "(0: do not wait or check)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def channels_import(file, prune, force, allow_host_change, reason, actor, wait_seconds, as_json):
    """Load FILE's channel definitions into the database: new channels added, changed ones replaced,
    obeyed by every running process within 2 s (no restart). Checked first: the schema, every
    ${VAR}, each adapter, a live channel's secret. Others stored are kept unless --prune.

    Then waits (--wait) until every live API and worker process reports it built the new version,
    and prints which did and which could not and why. A channel whose base_url moves to another
    host is shown ("host: ID FROM -> TO").

    Exit 0: built everywhere; 1: refused, nothing stored; 3: stored, but a process could not build
    all of it (it runs the others); 4: stored, but not confirmed within --wait; 5: refused, nothing
    stored: --prune would remove a channel that still carries payments processing, requires_action
    or requires_capture (or other operations not final), open disputes (needs_response: their
    ruling comes by the channel's callback) or live merchant channel accounts (mca_...):
    settle them, or give --force; 6: refused, nothing stored: a channel with live merchant channel
    accounts would move to another host (their credentials sent there): give --allow-host-change."""
    from app import context
    from app.domain.errors import PayRouterError
    from app.services import channel_import, channel_import_checks

    refused = {channel_import_checks.PRUNE_REFUSED: IMPORT_PRUNE_REFUSED,
               channel_import_checks.HOST_CHANGE_REFUSED: IMPORT_HOST_CHANGE_REFUSED}
    try:
        with context.bound():
            done = channel_import.import_file(file, _actor(actor), prune=prune, reason=reason, force=force,
                                              allow_host_change=allow_host_change)
    except PayRouterError as exc:
        if exc.code in refused:
            click.echo(f"Error: {exc.message}", err=True)
            raise SystemExit(refused[exc.code]) from None
        raise _fail(exc) from None
    builds = channel_import.wait_for_builds(done["version"], wait_seconds) if wait_seconds > 0 else None
    code = 0
    if builds is not None and not builds.confirmed:
        code = IMPORT_BUILD_FAILED if builds.having("failed") else IMPORT_UNCONFIRMED
    if as_json:
        click.echo(json.dumps({**done, "builds": builds.to_dict() if builds is not None else None}))
        raise SystemExit(code)
    for word in ("added", "changed", "removed", "unchanged", "kept"):
        if done[word]:
            click.echo(f"{word}: {', '.join(done[word])}")
    for change in done["host_changes"]:
        accounts = f" ({change['live_accounts']} live merchant channel account(s))" if change["live_accounts"] else ""
        click.echo(f"host: {change['channel']} {change['from']} -> {change['to']}{accounts}")
    for item in done.get("forced", []):
        click.echo(f"forced: removed {item['channel']} with {item['open_operations']} operation(s) not final, "
                   f"{item['open_disputes']} open dispute(s) and {item['live_accounts']} live merchant channel "
                   "account(s)", err=True)
    if done["generated_channel_secrets"]:
        click.echo(f"generated secrets for: {', '.join(done['generated_channel_secrets'])}")
    if done["kept"]:
        click.echo("(kept: stored channels the file does not list; --prune removes them)")
    click.echo(f"definitions version {done['version']}")
    if builds is not None:
        _print_builds(builds, wait_seconds)
    raise SystemExit(code)


def _print_builds(builds, wait_seconds: float) -> None:
    if builds.unreachable:
        click.echo(f"NOT CONFIRMED: {builds.unreachable}", err=True)
        return
    if not builds.outcomes:
        click.echo("no running process reported (none is live): each builds it when it starts")
        return
    built = builds.having("built")
    click.echo(f"built by {len(built)} of {len(builds.outcomes)} live processes:")
    for outcome in builds.outcomes:
        report = outcome.report
        who = f"{report.role:<6} {report.host} pid {report.pid}"
        if outcome.status == "built":
            click.echo(f"  built    {who}")
        elif outcome.status == "failed":
            without = ", ".join(report.unbuilt) or "?"
            click.echo(f"  FAILED   {who}: {report.error} (runs the others without {without})")
        elif outcome.status == "gone":
            click.echo(f"  GONE     {who}: stopped reporting (it last ran version {report.version})")
        else:
            click.echo(f"  NO ANSWER {who}: still runs version {report.version} after {wait_seconds:g} s")
    if not builds.confirmed:
        click.echo("the definitions are stored; a process that FAILED runs every stored channel but those it "
                   "could not build (never an older definition of them), and tries again on the next change "
                   "and every 10 s", err=True)


@click.group("operation")
def operation():
    """An operation kind: pause or resume it."""


@operation.command("pause")
@click.argument("kind", type=click.Choice(OperationKind.values()))
@_change
def operation_pause(kind, *, reason, actor):
    """Pause KIND (new ones are refused) in every process within 2 s."""
    from app.services import switchboard

    return switchboard.pause_operation(kind, actor, reason)


@operation.command("resume")
@click.argument("kind", type=click.Choice(OperationKind.values()))
@_change
def operation_resume(kind, *, reason, actor):
    """Resume KIND."""
    from app.services import switchboard

    return switchboard.resume_operation(kind, actor, reason)


@click.command("read-only")
@click.argument("state", type=click.Choice(["on", "off"]))
@_change
def read_only(state, *, reason, actor):
    """Read-only mode on (money requests refused) or off, in every process within 2 s."""
    from app.services import switchboard

    return switchboard.read_only_mode(state == "on", actor, reason)


@click.group("webhooks")
def webhooks():
    """Outgoing webhooks: pause or resume deliveries, relay the outbox, redeliver events."""


@webhooks.command("pause")
@_change
def webhooks_pause(*, reason, actor):
    """Pause webhook deliveries (events are kept and sent on resume)."""
    from app.services import switchboard

    return switchboard.pause_webhooks(actor, reason)


@webhooks.command("resume")
@_change
def webhooks_resume(*, reason, actor):
    """Resume webhook deliveries."""
    from app.services import switchboard

    return switchboard.resume_webhooks(actor, reason)


@webhooks.command("relay")
def webhooks_relay():
    """One relay pass: unrelayed events → deliveries → jobs; re-queue due and lost deliveries."""
    from app import context
    from app.services.webhooks import relay

    with context.bound():
        click.echo(json.dumps(relay.run_once()))


@webhooks.command("redeliver")
@click.argument("event_id")
@click.option("--endpoint", default=None, help="only this endpoint (we_…); default: every subscribed endpoint")
def webhooks_redeliver(event_id, endpoint):
    """Send event EVENT_ID again."""
    from app import context
    from app.adapters.db import unit_of_work
    from app.adapters.models import Event
    from app.domain.errors import PayRouterError
    from app.services.webhooks import deliveries, relay

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


COMMANDS = [switch, channel, channels_group, operation, read_only, webhooks]
