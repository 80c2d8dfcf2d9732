"""This process's channel instances, built from the channel definitions in the database
(app.adapters.channel_definitions) and rebuilt within about half a second of a change, with no restart.

A rebuild is all or nothing: the new set replaces the old in one assignment, or, when this process
cannot build a definition (an adapter it cannot import, a ``${VAR}`` or a live channel's secret its
environment lacks), the old set stays and the reason is logged, counted
(``payrouter_channels_build_failures``), kept in ``state()`` (which ``/readyz`` and the process's
build report show, app.adapters.channel_builds) and the build is tried again every
``RETRY_BUILD_SECONDS`` by the report thread (an adapter package installed meanwhile is found) as
well as on the next change. A channel whose definition (as
this process expands it) did not change keeps its instance, and with it its HTTP connections; a
circuit breaker's state is kept by channel id in Redis (app.services.breaker), so a change to one
channel leaves the others' circuits as they were.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass, replace

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
RETRY_BUILD_SECONDS = 10.0  # a failed build is tried again this often (besides on every change)


@dataclass(frozen=True)
class BuildState:
    """What this process runs and what it last failed to build. ``version`` is the definitions'
    version the channels in use were built from, ``stored`` the version last read from the
    database; they differ only while ``error`` says why this process could not build ``stored``."""

    version: str | None = None
    built_at: float | None = None  # epoch seconds
    stored: str | None = None
    error: str | None = None
    failed_at: float | None = None
    failures: int = 0

    @property
    def stale(self) -> bool:
        return self.error is not None and self.stored != self.version

    def to_dict(self) -> dict:
        return {"version": self.version, "built_at": self.built_at, "stored_version": self.stored,
                "error": self.error, "failed_at": self.failed_at, "stale": self.stale}


_state = BuildState()
_changed = threading.Event()  # the state changed: the report thread writes it at once


def state() -> BuildState:
    """This process's build state (never blocks: one attribute read)."""
    return _state


def pop_changed() -> bool:
    """Did the state change since the last call? (The report thread writes it at once if so.)"""
    if _changed.is_set():
        _changed.clear()
        return True
    return False


def _set_state(new: BuildState) -> None:
    global _state
    _state = new
    _changed.set()
    from app.adapters import metrics

    metrics.CHANNELS_BUILD_STALE.set(1 if new.stale else 0)


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
        return _rebuild(found, built)


def _rebuild(found: channel_definitions.Rows, built) -> ChannelRegistry:
    """Build ``found`` (holding ``_lock``): the new set in use, or (a process already running
    channels) the old one kept and the failure recorded. Not retried on the request path until the
    definitions change again; the report thread retries every RETRY_BUILD_SECONDS."""
    global _built
    from app.adapters import metrics

    wanted = channel_definitions.version(found)
    try:
        fresh = _build(found, built[1] if built is not None else None)
    except ChannelConfigError as exc:
        if built is None:
            raise
        metrics.CHANNELS_BUILD_FAILURES.inc()
        old = _state
        if old.error != exc.message or old.stored != wanted:
            log.error("channels version %s not built, version %s stays in use: %s", wanted, old.version,
                      exc.message, extra={"channels_version": wanted})
        _set_state(replace(old, stored=wanted, error=exc.message, failed_at=time.time(), failures=old.failures + 1))
        _built = (found, built[1])
        return built[1]
    if built is not None:
        log.info("channels version %s built: %s", wanted, ", ".join(fresh.ids()))
    _set_state(BuildState(version=wanted, built_at=time.time(), stored=wanted, failures=_state.failures))
    _built = (found, fresh)
    return fresh


def retry_failed() -> bool:
    """Build again the definitions this process last failed to build, if RETRY_BUILD_SECONDS have
    passed (an adapter package installed since is found: the import system's caches are dropped).
    True if that built them."""
    current = _state
    if not current.stale or current.failed_at is None or time.time() - current.failed_at < RETRY_BUILD_SECONDS:
        return False
    with _lock:
        built = _built
        if built is None or not _state.stale:
            return False
        importlib.invalidate_caches()
        _rebuild(built[0], built)
        return not _state.stale


def diagnose(found: channel_definitions.Rows | None = None) -> dict[str, str]:
    """Why this process cannot build each stored definition it cannot (by channel id; the others
    are left out), each tried on its own, with nothing written: ``channels list`` and the console
    mark them instead of failing with the first error."""
    from channels.modes import require_live_secrets

    config = get_config()
    found = channel_definitions.current() if found is None else found
    stored = StoredChannelSecrets(config)

    def secret(spec: ChannelSpec) -> str:  # a throwaway instance: no generated secret is created for it
        return stored(spec) if spec.id in stored else "not-generated-yet"

    problems = {}
    for cid, definition in found:
        try:
            (spec,) = channel_definitions.specs(((cid, definition),), config)
            require_live_secrets([spec], config.channel_env)
            build_channel(spec, config.channel_env, secret)
        except ChannelConfigError as exc:
            problems[cid] = exc.message.replace("channels[0]", f"channel {cid}")
    return problems


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
    global _built, _retry_at, _trusted_until, _state
    with _lock:
        _built, _retry_at, _trusted_until, _state = None, 0.0, 0.0, BuildState()
        channel_definitions.reset()
