"""Channel definitions in the database (table ``channels``): the source of truth once ``payrouter
init`` or ``payrouter channels import FILE`` wrote them (contract §4).

Each row keeps one item of the channels file as given, ``${VAR}`` references unexpanded: every
process expands them from its own environment when it builds its channels
(app.adapters.channels_runtime). A change is announced like the other cached tables
(app.adapters.cached: a Redis version token and a notice on the ``channels`` topic), so every
process rebuilds its channels within about half a second, with no restart.

A database that holds no channel yet (``init`` never ran on it) takes the configured file's on
first use, as ``init`` would: the first writer wins, everyone reads its rows.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.adapters import cached
from app.adapters.db import insert_unique_row, read_only, unit_of_work
from app.adapters.models import ChannelDefinition, utcnow
from app.config import Config, get_config
from channels.config import ChannelConfigError, ChannelSpec, parse_channels, read_channels_data

log = logging.getLogger("payrouter.channels")

VERSION_KEY = "payrouter:channels:version"
Rows = tuple[tuple[str, str], ...]  # (id, the definition as canonical JSON), in order: cheap to compare


def _canonical(definition: dict) -> str:
    return json.dumps(definition, sort_keys=True, separators=(",", ":"))


def rows(config: Config | None = None) -> Rows:
    """Every stored definition, in order, importing the configured file first if there is none."""
    config = config or get_config()
    found = _read(config)
    if not found and seed(config):
        found = _read(config)
    return found


def _read(config: Config) -> Rows:
    with read_only(config) as session:  # may run inside a request's open transaction
        return read_in(session)


def read_in(session: Session, lock: bool = False) -> Rows:
    """The stored definitions as ``session`` sees them (an import reads back what it wrote);
    ``lock``: their rows locked until the transaction ends (an import reads what it replaces)."""
    query = (select(ChannelDefinition).order_by(ChannelDefinition.position, ChannelDefinition.id)
             .execution_options(populate_existing=True))  # as written by write()'s UPDATE, not as first loaded
    return tuple((row.id, _canonical(row.definition)) for row in session.scalars(
        query.with_for_update() if lock else query))


def version(found: Rows) -> str:
    """The definitions' version: a digest of the stored rows, in order (12 hex digits). Every
    process computes it from what it read, so the CLI that wrote them and each process that built
    them name the same version without a counter to keep (app.adapters.channel_builds)."""
    digest = hashlib.sha256()
    for cid, definition in found:
        digest.update(cid.encode() + b"\0" + definition.encode() + b"\n")
    return digest.hexdigest()[:12]


_copy = cached.Copy("channels", VERSION_KEY, rows)


def current() -> Rows:
    """This process's copy of the definitions (re-read within about half a second of a change)."""
    return _copy.get()


def unchanged(found: Rows) -> bool:
    """Is ``found`` still the copy, with no change notice since it was read? Lock-free (an attribute
    read or two), for callers that may trust a copy they just had for a moment longer."""
    return _copy.values is found and not _copy.watch.missed()


def announce() -> None:
    """Every process re-reads the definitions (and rebuilds the channels that changed)."""
    _copy.announce()


def reset() -> None:
    """Forget this process's copy (tests; a cleaned database)."""
    with _copy.lock:
        _copy.values = None
    _copy.invalidate()


def items(found: Rows) -> list[dict]:
    return [json.loads(definition) for _, definition in found]


def specs(found: Rows, config: Config) -> list[ChannelSpec]:
    """The stored definitions as this process reads them (its environment expands ``${VAR}``)."""
    return parse_channels({"channels": items(found)}, config.channel_env, source="the channels in the database")


def readable_specs(config: Config | None = None) -> list[ChannelSpec]:
    """Each stored definition this process can read (its environment expands its ``${VAR}``s), the
    others left out (logged), with no seeding: what ``payrouter sandbox`` re-reads while it runs."""
    config = config or get_config()
    found = []
    for cid, definition in _read(config):
        try:
            found.extend(specs(((cid, definition),), config))
        except ChannelConfigError as exc:
            log.info("channel %s left out here: %s", cid, exc.message)
    return found


def last_changes() -> dict[str, tuple[str, object]]:
    """Who last wrote each stored channel, and when (naive UTC)."""
    with read_only() as session:
        return {row.id: (row.updated_by, row.updated_at) for row in session.execute(
            select(ChannelDefinition.id, ChannelDefinition.updated_by, ChannelDefinition.updated_at))}


@dataclass(frozen=True)
class Written:
    """What an import did, by channel id."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # stored, not in the file, left as they are

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def to_dict(self) -> dict:
        return {"added": self.added, "changed": self.changed, "unchanged": self.unchanged,
                "removed": self.removed, "kept": self.kept}


def write(session: Session, definitions: list[dict], actor: str, prune: bool = False) -> Written:
    """Store ``definitions`` (items of a checked channels file) in their order: new ones added,
    others replaced; stored channels the list leaves out are removed with ``prune``, else kept
    (after the listed ones). Locks the rows it reads: concurrent imports apply one after the other."""
    table = ChannelDefinition.__table__
    stored = {row.id: row for row in session.scalars(select(ChannelDefinition).with_for_update())}
    done = Written()
    now = utcnow()
    for position, item in enumerate(definitions):
        values = {"position": position, "definition": item, "updated_by": actor[:200], "updated_at": now}
        row = stored.get(item["id"])
        if row is not None and _canonical(row.definition) == _canonical(item):
            done.unchanged.append(item["id"])
            if row.position != position:
                row.position = position
        elif row is None and insert_unique_row(session, table, {"id": item["id"], **values}):
            done.added.append(item["id"])
        else:  # changed, or added meanwhile by another process (its row is ours to replace)
            session.execute(update(table).where(table.c.id == item["id"]).values(**values))
            done.changed.append(item["id"])
    listed = {item["id"] for item in definitions}
    left_out = [cid for cid in sorted(stored, key=lambda cid: stored[cid].position) if cid not in listed]
    if prune and left_out:
        session.execute(delete(table).where(table.c.id.in_(left_out)))
        done.removed.extend(left_out)
    else:
        for offset, cid in enumerate(left_out):
            stored[cid].position = len(definitions) + offset
        done.kept.extend(left_out)
    session.flush()
    return done


def seed(config: Config) -> bool:
    """No channel stored yet: store the configured file's (checked first), unless another process
    did meanwhile. True if this call wrote them."""
    data = read_channels_data(config.channels_file, config.channel_env)
    parse_channels(data, config.channel_env, source=f"channels file {config.channels_file}")
    with unit_of_work(config) as session:
        if session.scalar(select(ChannelDefinition.id).limit(1)) is not None:
            return False
        write(session, list(data["channels"]), f"payrouter (first use of {config.channels_file})")
    announce()
    return True
