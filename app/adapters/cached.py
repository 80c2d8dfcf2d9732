"""A per-process copy of a small table that every process must obey within 2 s of a change
(degradation switches, manual circuit overrides).

Reads come from the copy. A change is announced over Redis pub/sub (app.adapters.notify): every
listening process drops its copy at once and re-reads the database on the next read (and every
``reload_interval`` seconds anyway). While a process is not listening, its copy is re-validated
at most every ``check_interval`` seconds against a Redis version key (a random token written on
every change), so a change in any process is seen everywhere within about half a second; with
Redis down the copy re-reads the database instead.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Callable, Generic, TypeVar

from app.adapters import notify
from app.adapters.redis_conn import get_redis

log = logging.getLogger("payrouter.cached")
T = TypeVar("T")

CHECK_INTERVAL = 0.5
RELOAD_INTERVAL = 5.0  # re-read the database this often anyway (a change announced while Redis was down)


class Copy(Generic[T]):
    """This process's copy of what ``load`` reads, with the version it was read at."""

    def __init__(self, topic: str, version_key: str, load: Callable[[], T],
                 check_interval: float = CHECK_INTERVAL, reload_interval: float = RELOAD_INTERVAL):
        self.topic, self.version_key, self.load = topic, version_key, load
        self.check_interval, self.reload_interval = check_interval, reload_interval
        self.lock = threading.Lock()
        self.values: T | None = None
        self.version: str | None = None
        self.loaded = 0.0
        self.watch = notify.Watch(topic)

    def invalidate(self) -> None:
        """A change (or a possibly missed one): the next read goes to the database."""
        self.watch.changed()

    def get(self) -> T:
        with self.lock:
            now = time.monotonic()
            if self.values is not None and self.watch.fresh(now, self.check_interval, self.reload_interval):
                return self.values
            notice = self.watch.notice  # a notice arriving while we read makes the next read read again
            if notify.healthy():
                version, stale = self.version, True
            else:
                try:
                    version = get_redis().get(self.version_key)
                    version = version.decode() if isinstance(version, bytes) else version
                    stale = (self.values is None or version != self.version or self.watch.missed()
                             or now - self.loaded > self.reload_interval)
                except Exception as exc:  # Redis down: fall back to the database
                    log.debug("%s version check failed, reading the database: %s", self.topic, exc)
                    version, stale = None, True
            if stale:
                self.values = self.load()
                self.version, self.loaded = version, now
            self.watch.caught_up(notice, now)
            return self.values

    def announce(self) -> None:
        """Tell every process the table changed (a new version token); this process re-reads at once."""
        self.invalidate()
        try:
            get_redis().set(self.version_key, secrets.token_hex(8))
            notify.announce(self.topic)
        except Exception as exc:  # the others fall back on their own re-reads of the database
            log.warning("could not announce a %s change through Redis: %s", self.topic, exc)
