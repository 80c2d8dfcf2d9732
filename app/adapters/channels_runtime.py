"""This process's channel instances, built from the channel definitions in the database
(app.adapters.channel_definitions) and rebuilt within about half a second of a change, with no restart.

A rebuild is all or nothing: the new set replaces the old in one assignment, or, when this process
cannot build a definition (an adapter it cannot import, a ``${VAR}`` or a live channel's secret its
environment lacks), the old set stays and the reason is logged. A channel whose definition (as
this process expands it) did not change keeps its instance, and with it its HTTP connections; a
circuit breaker's state is kept by channel id in Redis (app.services.breaker), so a change to one
channel leaves the others' circuits as they were.
"""
from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from app.adapters import channel_definitions
from app.adapters.channel_secrets import StoredChannelSecrets
from app.config import get_config
from channels.base import Channel
from channels.config import ChannelConfigError, ChannelSpec
from channels.registry import ChannelRegistry, build_channel

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"  # PAYROUTER_PUBLIC_URL unset: `serve`'s default address
log = logging.getLogger("payrouter.channels")
_lock = threading.Lock()
# The definitions the registry was built from (or last failed to be rebuilt from) and the registry.
_built: tuple[channel_definitions.Rows, ChannelRegistry] | None = None
_retry_at = 0.0  # while the database is unreachable, re-read the definitions no more often than this
RETRY_SECONDS = 1.0
# A registry just checked against the copy is trusted this long without asking the copy again (unless
# a change notice comes): a request looks at the channels many times, each then costs no lock. It
# adds at most this to the copy's own delay (app.adapters.cached), well within the 2 s of a change.
_trusted_until = 0.0
TRUST_SECONDS = 0.25


def specs(found: channel_definitions.Rows | None = None) -> list[ChannelSpec]:
    """The stored definitions (this process's copy) as this process reads them."""
    return channel_definitions.specs(channel_definitions.current() if found is None else found, get_config())


def _build(found: channel_definitions.Rows, previous: ChannelRegistry | None) -> ChannelRegistry:
    from channels.modes import require_live_secrets

    config = get_config()
    wanted = specs(found)
    require_live_secrets(wanted, config.channel_env)
    stored = StoredChannelSecrets(config)
    kept = {c.id: c for c in previous} if previous is not None else {}
    return ChannelRegistry([kept[spec.id] if spec.id in kept and kept[spec.id].spec == spec
                            else build_channel(spec, config.channel_env, stored) for spec in wanted])


def registry() -> ChannelRegistry:
    global _built, _retry_at, _trusted_until
    built, now = _built, time.monotonic()
    if built is not None and (now < _retry_at or now < _trusted_until and channel_definitions.unchanged(built[0])):
        return built[1]
    try:
        found = channel_definitions.current()
        _trusted_until = time.monotonic() + TRUST_SECONDS
    except SQLAlchemyError as exc:  # the database unreachable: run the channels we have, ask again in a while
        if built is None:
            raise
        _retry_at = time.monotonic() + RETRY_SECONDS
        log.warning("channel definitions not re-read (the database: %s); the current ones stay in use", exc)
        return built[1]
    if built is not None and built[0] is found:  # the copy was not re-read: nothing to compare
        return built[1]
    with _lock:
        built = _built
        if built is not None and built[0] == found:
            _built = (found, built[1])
            return built[1]
        try:
            fresh = _build(found, built[1] if built is not None else None)
        except ChannelConfigError as exc:
            if built is None:
                raise
            log.error("channels not reloaded, the previous ones stay in use: %s", exc.message)
            _built = (found, built[1])  # not retried until the definitions change again
            return built[1]
        if built is not None:
            log.info("channels reloaded: %s", ", ".join(fresh.ids()))
        _built = (found, fresh)
        return fresh


def check_live_channels() -> None:
    """Refuse (ChannelConfigError) stored channels with a live channel whose secret is not in its
    environment variable: called where a process starts (app factory, worker, ``serve``) and
    before channels are loaded, so no process runs one on a derived or default secret."""
    from channels.modes import require_live_secrets

    require_live_secrets(specs(), get_config().channel_env)


def prepare() -> ChannelRegistry:
    """Where a process starts (app factory, worker): refuse a live channel without its secret, and
    build the channels now, so a test channel's missing generated secret (and, on a database
    ``init`` never ran on, the configured file's definitions) is created in a transaction of its
    own, never from inside a request's (on SQLite that transaction holds the only write lock, and
    the nested insert waited for it until ``database is locked``)."""
    check_live_channels()
    return registry()


def ids_in_use() -> list[str]:
    """The channels this process runs right now (a probe for ops and tests, as a job on a worker)."""
    return registry().ids()


def channel(channel_id: str) -> Channel:
    return registry().get(channel_id)


def callback_url(channel_id: str) -> str:
    """Where a channel posts its callbacks for us: PAYROUTER_PUBLIC_URL + /callbacks/<id>."""
    base = get_config().public_url or DEFAULT_PUBLIC_URL
    return f"{base.rstrip('/')}/callbacks/{channel_id}"


def reset() -> None:
    global _built, _retry_at, _trusted_until
    with _lock:
        _built, _retry_at, _trusted_until = None, 0.0, 0.0
        channel_definitions.reset()
