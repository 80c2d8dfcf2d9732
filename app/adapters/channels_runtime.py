"""This process's channel instances, built from the channel definitions in the database
(app.adapters.channel_definitions) and rebuilt within about half a second of a change, with no restart.

Every process runs exactly the stored definitions its environment can build, whatever it started
from (its own boot, a gunicorn master's boot set inherited by a respawned worker, a long run through
many changes): the channels in use are a function of the stored definitions and this process's
environment, so processes with the same environment route the same way. A definition this process
cannot build (an adapter it cannot import, a ``${VAR}`` or a live channel's secret its environment
lacks, a value the adapter rejects, any exception the adapter's code raises while it builds) is
left out: never an older definition of that channel in its place (the stored one changed or removed
it for a reason, and a process that starts later could not know the older one), never a reason not
to start. The channels left out and why are logged, counted
(``payrouter_channels_build_failures``), kept in ``state()`` (which ``/readyz``, the metrics and
the process's build report show, app.adapters.channel_builds), and tried again every
``RETRY_BUILD_SECONDS`` by the report thread (an adapter package installed meanwhile is found) as
well as on the next change. A channel whose definition (as this process expands it) did not change
keeps its instance, and with it its HTTP connections; a circuit breaker's state is kept by channel id
in Redis (app.services.breaker), so a change to one channel leaves the others' circuits as they were.

A gunicorn worker forked from a master that built the channels at boot drops what it inherited and
builds the stored definitions again (``after_fork``): the master's set may be long out of date.
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
    """What this process runs and what it could not build. ``version`` is the stored definitions'
    version the channels in use were built from, ``stored`` the version last read from the database
    (the same once built); ``unbuilt`` the stored channels this process left out of ``version``
    (``error`` says why, by channel) or, with ``stored`` differing, ``error`` says why the stored
    version was not read."""

    version: str | None = None
    built_at: float | None = None  # epoch seconds
    stored: str | None = None
    error: str | None = None
    failed_at: float | None = None
    failures: int = 0
    unbuilt: tuple[str, ...] = ()

    @property
    def stale(self) -> bool:
        """Not running the whole stored set: channels left out, or the definitions not re-read."""
        return self.error is not None

    def words(self) -> str:
        """``/readyz``'s check in words (for the operator: behind the ops token)."""
        if not self.stale:
            return "ok"
        if self.unbuilt:
            return (f"degraded: runs version {self.version} without {', '.join(self.unbuilt)} "
                    f"(not built here): {self.error}")
        return f"stale: runs version {self.version}, could not read version {self.stored}: {self.error}"

    def to_dict(self) -> dict:
        return {"version": self.version, "built_at": self.built_at, "stored_version": self.stored,
                "error": self.error, "failed_at": self.failed_at, "unbuilt": list(self.unbuilt),
                "stale": self.stale}


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


def _build(found: channel_definitions.Rows, previous: ChannelRegistry | None) -> tuple[ChannelRegistry, dict]:
    """Every definition of ``found`` this process can build, each on its own (an unchanged one keeps
    its instance from ``previous``), and why it could not build each other one (by channel id)."""
    from channels.modes import require_live_secrets

    config = get_config()
    stored = StoredChannelSecrets(config)
    kept = {c.id: c for c in previous} if previous is not None else {}
    built, problems = [], {}
    for cid, definition in found:
        try:
            (spec,) = channel_definitions.specs(((cid, definition),), config)
            require_live_secrets([spec], config.channel_env)
            built.append(kept[cid] if cid in kept and kept[cid].spec == spec
                         else build_channel(spec, config.channel_env, stored))
        except SQLAlchemyError:  # the database, not this channel: the caller's to handle
            raise
        except Exception as exc:  # noqa: BLE001 - one channel's problem, whatever it is, leaves out only that one
            problems[cid] = f"{cid}: " + _why(exc, cid)
    return ChannelRegistry(built), problems


def _why(exc: Exception, cid: str) -> str:
    """Why channel ``cid`` could not be built, in words (a ChannelConfigError's message, else the
    exception's class and text: an adapter's own bug is named as such)."""
    if isinstance(exc, ChannelConfigError):
        return exc.message.replace("channels[0]", f"channel {cid}")
    log.warning("channel %s: building it raised %s", cid, exc.__class__.__name__, exc_info=exc)
    return f"channel {cid}: building it failed: {exc.__class__.__name__}: {exc}"


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
    """Build ``found`` (holding ``_lock``) and put it in use: every definition this process can
    build; the others left out, recorded and logged (once per new reason). Not retried on the request
    path until the definitions change again; the report thread retries every RETRY_BUILD_SECONDS."""
    global _built
    from app.adapters import metrics

    wanted = channel_definitions.version(found)
    fresh, problems = _build(found, built[1] if built is not None else None)
    _built = (found, fresh)
    old = _state
    if not problems:
        if built is not None:
            log.info("channels version %s built: %s", wanted, ", ".join(fresh.ids()))
        _set_state(BuildState(version=wanted, built_at=time.time(), stored=wanted, failures=old.failures))
        return fresh
    metrics.CHANNELS_BUILD_FAILURES.inc()
    error = "; ".join(problems.values())
    if old.error != error or old.stored != wanted:
        log.error("channels version %s built without %s (runs %s): %s", wanted, ", ".join(problems),
                  ", ".join(fresh.ids()) or "no channel", error, extra={"channels_version": wanted})
    same = old.version == wanted and old.unbuilt == tuple(problems)
    _set_state(BuildState(version=wanted, built_at=old.built_at if same else time.time(), stored=wanted,
                          error=error, failed_at=time.time(), failures=old.failures + 1, unbuilt=tuple(problems)))
    return fresh


def retry_failed() -> bool:
    """Build again the definitions this process last could not build whole, if RETRY_BUILD_SECONDS
    have passed (an adapter package installed since is found: the import system's caches are
    dropped). True if that built them all."""
    current = _state
    if not current.stale or current.failed_at is None or time.time() - current.failed_at < RETRY_BUILD_SECONDS:
        return False
    with _lock:
        built = _built
        if built is None or not _state.stale:
            return False
        importlib.invalidate_caches()
        try:
            found = channel_definitions.current()
        except SQLAlchemyError:
            found = built[0]
        _rebuild(found, built)
        return not _state.stale


def after_fork() -> None:
    """In a process forked from one that built the channels (a gunicorn worker from its preloading
    master, at every fork, a respawn included): forget the inherited copy and build the stored
    definitions now, as a process that just started would (no instance of the master's is kept: its
    HTTP connections are the master's). When the database does not answer, the inherited set runs,
    reported stale until the definitions are read."""
    global _built, _retry_at, _trusted_until
    with _lock:
        inherited, _built, _retry_at, _trusted_until = _built, None, 0.0, 0.0
        channel_definitions.reset()
    try:
        registry()
    except SQLAlchemyError as exc:
        with _lock:
            if _built is None and inherited is not None:
                _built = inherited
                _set_state(replace(_state, error=f"the definitions were not read since this process started "
                                   f"(the database: {exc.__class__.__name__}); it runs the set it was forked with",
                                   stored=None, failed_at=time.time()))


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
        except SQLAlchemyError:
            raise
        except Exception as exc:  # noqa: BLE001 - as _build: every reason one channel cannot be built
            problems[cid] = _why(exc, cid)
    return problems


def check_live_channels() -> None:
    """Refuse (ChannelConfigError) stored channels with a live channel whose secret is not in its
    environment variable (contract: the server refuses to start instead of running one on a derived
    or default secret): called where a process starts (app factory, worker, ``serve``) and before
    channels are loaded. A definition this process cannot read at all (a ``${VAR}`` it lacks) is
    not a reason to refuse: it is left out of the build, and reported."""
    from channels.modes import require_live_secrets

    config = get_config()
    readable = []
    for cid, definition in channel_definitions.current():
        try:
            readable.extend(channel_definitions.specs(((cid, definition),), config))
        except ChannelConfigError:
            continue
    require_live_secrets(readable, config.channel_env)


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
