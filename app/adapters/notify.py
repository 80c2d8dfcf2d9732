"""Change notices between processes over Redis pub/sub (switches toggled, rules published,
circuits opened or closed, API keys revoked).

Each process that reads a cached setting runs one listener thread, started on first use (after
a fork too: gunicorn and RQ workers each get their own). A notice makes every subscribed
process drop its cached copy at once, so a toggle is obeyed everywhere within milliseconds,
and while the listener is subscribed the caches do not need to ask Redis on every read.

Pub/sub delivers only to who is listening: a notice sent while a listener is disconnected is
lost. So a listener counts as ``healthy()`` only while subscribed; on every (re)subscription it
tells every topic's callbacks that they may have missed something, and while unhealthy the
caches fall back to polling a version key in Redis, and the database if Redis is down.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import defaultdict
from typing import Callable

import redis

from app.adapters import redis_conn
from app.adapters.redis_conn import get_redis, redis_url

log = logging.getLogger("payrouter.notify")
TOPICS = ("switches", "rules", "breakers", "api_keys", "channels", "channel_accounts")
RETRY_SECONDS = 1.0
HEALTH_CHECK_SECONDS = 5

_lock = threading.Lock()
_callbacks: dict[str, list[Callable[[], None]]] = defaultdict(list)
_listener: "_Listener | None" = None


def _channel(client: redis.Redis) -> str:
    """Pub/sub ignores database numbers: the channel names the database, so test runs and
    deployments sharing one Redis server do not hear each other."""
    return f"payrouter:changes:{client.connection_pool.connection_kwargs.get('db', 0)}"


def on_change(topic: str, callback: Callable[[], None]) -> None:
    """Call ``callback`` (quick, no I/O) when ``topic`` changes in any process, or may have."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic}")
    with _lock:
        if callback not in _callbacks[topic]:
            _callbacks[topic].append(callback)


def announce(topic: str) -> None:
    """Tell every process that ``topic`` changed. Raises redis.RedisError if Redis is down."""
    client = get_redis()
    client.publish(_channel(client), topic)


class Watch:
    """How fresh a process's cached copy of ``topic`` is. A notice bumps ``notice``; a reader
    that re-read (or re-validated) the copy catches ``seen`` up to the notice it started from, so
    a notice arriving while it reads makes the next read read again. Lock-free on the notice
    side: the listener thread calls ``changed`` while a reader may hold its cache's lock."""

    def __init__(self, topic: str):
        self._counter = itertools.count(1)
        self.notice = self.seen = 0
        self.checked = 0.0
        on_change(topic, self.changed)

    def changed(self) -> None:
        self.notice = next(self._counter)

    def missed(self) -> bool:
        """Has a notice come since the copy was last read?"""
        return self.seen != self.notice

    def fresh(self, now: float, check_interval: float, reload_interval: float) -> bool:
        """No notice missed, and checked within ``reload_interval`` while this process listens
        (notices then say when it changes), else within ``check_interval`` (it must poll)."""
        return not self.missed() and recent(now - self.checked, check_interval, reload_interval)

    def caught_up(self, notice: int, now: float) -> None:
        self.seen, self.checked = notice, now

    def expire(self) -> None:
        self.checked = 0.0


def recent(age: float, check_interval: float, reload_interval: float) -> bool:
    """Is a copy checked ``age`` seconds ago still good: younger than ``reload_interval`` while this
    process listens, than ``check_interval`` while it must poll? Whether it listens (``healthy()``)
    is asked only when the answer depends on it: most reads come within both intervals."""
    if age < check_interval and age < reload_interval:
        return True
    if age >= check_interval and age >= reload_interval:
        return False
    return age < (reload_interval if healthy() else check_interval)


def healthy() -> bool:
    """Is this process subscribed right now (to the Redis of the current configuration), and does
    it not take that Redis for hung (app.adapters.redis_conn.Outage: a subscription on a stopped server looks
    alive, but no notice can come through it)? Starts the listener if this process has none."""
    url = redis_url()
    listener = _ensure_listener(url)
    return listener.subscribed.is_set() and listener.url == url and not redis_conn.is_down(url=url)


def _fire(topics) -> None:
    with _lock:
        callbacks = [cb for topic in topics for cb in _callbacks.get(topic, ())]
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - one bad callback must not stop the others
            log.exception("change callback failed")


class _Listener(threading.Thread):
    def __init__(self, url: str):
        super().__init__(name="payrouter-notify", daemon=True)
        self.url, self.pid = url, os.getpid()
        self.subscribed, self.stopped = threading.Event(), threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            pubsub = None
            try:
                # Keepalive and a PING every few seconds: a connection that died without a word
                # (a half-open TCP connection) is noticed, and the caches poll meanwhile.
                tcp = {} if self.url.startswith("unix:") else {"socket_keepalive": True}
                client = redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=None,
                                              health_check_interval=HEALTH_CHECK_SECONDS, **tcp)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(_channel(client))
                pubsub.get_message(timeout=2)  # the subscription's confirmation
                self.subscribed.set()
                _fire(TOPICS)  # anything announced while we were not listening
                while not self.stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        topic = message["data"].decode() if isinstance(message["data"], bytes) else message["data"]
                        _fire([topic])
            except (redis.RedisError, OSError) as exc:  # Redis down or restarted: poll meanwhile, retry
                log.debug("change listener disconnected: %s", exc)
            except Exception:  # noqa: BLE001 - a bug must not kill the listener for good: say it, retry
                log.exception("change listener failed")
            finally:
                self.subscribed.clear()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass
            self.stopped.wait(RETRY_SECONDS)


def _ensure_listener(url: str) -> _Listener:
    """This process's listener to the Redis at ``url`` (the configuration's), started if it has none."""
    global _listener
    listener = _listener
    # Subscribed: its thread runs (it clears the flag before it ends); is_alive() only when it is not.
    if (listener is not None and listener.pid == os.getpid() and listener.url == url
            and (listener.subscribed.is_set() or listener.is_alive())):
        return listener
    with _lock:
        listener = _listener
        if listener is None or listener.pid != os.getpid() or listener.url != url or not listener.is_alive():
            if listener is not None and listener.pid == os.getpid():
                listener.stopped.set()
            listener = _listener = _Listener(url)
            listener.start()
    return listener


def wait_until_healthy(timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy():
            return True
        time.sleep(0.02)
    return False
