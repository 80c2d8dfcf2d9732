"""``payrouter init`` and ``payrouter channels import FILE``: a channels file into the database
(contract §4), obeyed by every process within 2 s, with no restart (app.adapters.channels_runtime).

The file is checked first as this process would run it: the schema, every ``${VAR}`` it uses,
each adapter built (a test channel's generated secret made if missing), a live channel's secret
in its environment variable. Channels the file leaves out are kept, or removed with ``prune``
unless the live rules still route to them. An import that changes something is audited.

What it returns names the definitions ``version`` now stored; ``wait_for_builds`` then watches the
live processes' build reports (app.adapters.channel_builds) until each has built that version or
said why it could not, for at most the time given: what ``payrouter channels import`` prints.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import redis

from app.adapters import channel_builds, channel_definitions
from app.adapters.channel_secrets import StoredChannelSecrets
from app.adapters.db import read_only, unit_of_work
from app.config import get_config
from app.domain.errors import InvalidRequest
from app.services import audit
from app.services import channel_import_checks as checks
from app.services import rules_store as store
from channels.config import ChannelConfigError, channels_path, expand_env, parse_channels, read_channels_data
from channels.modes import require_live_secrets
from channels.registry import build_channel
from rules import format


def import_file(path: str | os.PathLike | None, actor: str, *, prune: bool = False, reason: str | None = None,
                force: bool = False, allow_host_change: bool = False) -> dict:
    """Store the channels of ``path`` (default: the configured file); what was added, changed,
    left unchanged, removed (``prune``) or kept, each channel moved to another host, and the test
    channels given a generated secret. A prune that would strand live work (``force``), or a host
    change under live merchant accounts (``allow_host_change``), is refused unless allowed
    (app.services.channel_import_checks): Conflict, nothing stored."""
    config = get_config()
    path = channels_path(path or config.channels_file, config.channel_env)
    data = read_channels_data(path, config.channel_env)
    wanted = parse_channels(data, config.channel_env, source=f"channels file {path}")
    require_live_secrets(wanted, config.channel_env)
    stored = StoredChannelSecrets(config)
    had_secret = {spec.id for spec in wanted if spec.id in stored}
    for spec in wanted:
        build_channel(spec, config.channel_env, stored)
    listed = [item["id"] for item in data["channels"]]
    if prune:
        _refuse_removing_routed(set(listed))
    with unit_of_work() as session:
        before = dict(channel_definitions.read_in(session, lock=True))
        written = channel_definitions.write(session, list(data["channels"]), actor, prune=prune)
        stranding = checks.stranded(session, written.removed)
        moving = checks.host_changes(session, before, dict(channel_definitions.read_in(session)), written.changed,
                                     lambda definition: _base_url(definition, config))
        checks.refuse(stranding, moving, force=force, allow_host_change=allow_host_change)
        plan = {**written.to_dict(), "host_changes": [change.to_dict() for change in moving]}
        if stranding:  # forced: what it stranded is kept with the audit row
            plan["forced"] = [item.to_dict() for item in stranding]
        if written.any:
            audit.record(session, actor=actor, action="channels.import", target=f"channels:{path.name}"[:200],
                         before={"channels": sorted(before)}, after=plan, reason=reason)
        version = channel_definitions.version(channel_definitions.read_in(session))
    if written.any:
        channel_definitions.announce()
    generated = [spec.id for spec in wanted if spec.id in stored and spec.id not in had_secret]
    return {"file": str(path), "version": version, **plan, "generated_channel_secrets": generated}


def _base_url(definition: dict, config) -> object:
    """A definition's ``config.base_url`` as this process expands it (as written if it cannot)."""
    raw = (definition.get("config") or {}).get("base_url")
    try:
        return expand_env(raw, config.channel_env)
    except ChannelConfigError:
        return raw


@dataclass(frozen=True)
class Outcome:
    """One live process and the imported version: ``built``, ``failed`` (it runs the imported
    version without ``report.unbuilt``: ``error`` says why), ``pending`` (no answer yet: still on
    another version) or ``gone`` (it was live when the wait began and stopped reporting)."""

    report: channel_builds.Report
    status: str

    def to_dict(self) -> dict:
        return {**self.report.to_dict(), "outcome": self.status}


@dataclass(frozen=True)
class Builds:
    version: str
    outcomes: list[Outcome]
    unreachable: str | None = None  # Redis did not answer: nothing could be confirmed
    waited: float = 0.0

    def having(self, status: str) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status == status]

    @property
    def confirmed(self) -> bool:
        return self.unreachable is None and all(outcome.status == "built" for outcome in self.outcomes)

    def to_dict(self) -> dict:
        return {"version": self.version, "waited_seconds": round(self.waited, 3), "unreachable": self.unreachable,
                "processes": [outcome.to_dict() for outcome in self.outcomes]}


def _outcome(report: channel_builds.Report, version: str) -> str:
    if report.stored_version == version and report.error is not None:
        return "failed"  # it runs ``version`` without the channels it could not build
    if report.version == version:
        return "built"
    return "pending"


def wait_for_builds(version: str, timeout: float, poll: float = 0.05) -> Builds:
    """Watch the live processes' build reports until every one has built ``version`` or failed
    to, or ``timeout`` seconds passed. A process live when the wait began that stops reporting is
    ``gone``; one that starts meanwhile is waited for too."""
    started = time.monotonic()
    deadline = started + max(timeout, 0.0)
    seen: dict[str, channel_builds.Report] = {}
    while True:
        try:
            reports = {report.name: report for report in channel_builds.live()}
        except redis.RedisError as exc:
            return Builds(version, [], unreachable=f"Redis did not answer ({exc.__class__.__name__}): "
                          "the processes' builds cannot be confirmed", waited=time.monotonic() - started)
        seen.update(reports)
        outcomes = [Outcome(report, _outcome(report, version) if name in reports else "gone")
                    for name, report in sorted(seen.items(), key=lambda item: (item[1].role, item[1].host,
                                                                                item[1].pid))]
        if all(o.status != "pending" for o in outcomes) or time.monotonic() >= deadline:
            return Builds(version, outcomes, waited=time.monotonic() - started)
        time.sleep(poll)


def _refuse_removing_routed(remaining: set[str]) -> None:
    """Every live rule set, the platform's and each merchant's own, must still name only channels
    that stay: else a removal would leave its routes pointing nowhere (every payment on them a
    silent ``no_route``)."""
    with read_only() as session:
        owners = [None, *store.owners(session)]
        live = {owner: store.live_version(session, owner) for owner in owners}
        sources = {owner: store.source_of(session, version, owner) for owner, version in live.items()
                   if version is not None}
    for owner, source in sources.items():
        problems = format.validate(source, remaining)
        if problems:
            whose = "the live rules" if owner is None else f"the live rules of merchant {owner}"
            raise InvalidRequest(
                f"--prune would remove channels {whose} (version {live[owner]}) route to: "
                + "; ".join(str(problem) for problem in problems[:5])
                + ". Publish rules without them first.", param="channels", code="channel_in_use")
