"""Each running process's channel build, reported where every other process and the CLI can read it.

A process that routes (a gunicorn worker of ``serve``: role ``api``; ``payrouter worker``: role
``worker``) runs one report thread (``start``). Every ``POLL_SECONDS`` it asks its channels to be
current (``channels_runtime.registry()``: a change notice or the version key makes that rebuild them
even when no request comes), retries a failed build every ``RETRY_BUILD_SECONDS``, and writes its
report: at once after a build succeeded or failed, else every ``HEARTBEAT_SECONDS``.

A report is one Redis key per process, ``payrouter:channels:build:<host>:<pid>`` (JSON: host, pid,
role, when it started, the definitions version it runs and when it built it, the stored version it
last read, the stored channels it runs without and why, and when), written with a TTL of
``REPORT_TTL_SECONDS``, and its name in the sorted set ``payrouter:channels:builds`` scored by when it
expires. A process that stops or hangs stops renewing its report and drops out of ``live()`` within
the TTL, with nothing to clean up (readers trim expired names). Reports are about processes, not
money: they are not kept in the database (see docs/design.md, "Channel builds").

``payrouter channels import`` waits on ``live()`` until every live process reports the version it
wrote (or the error it got building it): app.services.channel_import.wait_for_builds.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import redis

from app.adapters import channels_runtime
from app.adapters.redis_conn import get_redis
from app.config import get_config, scoped

log = logging.getLogger("payrouter.channels")

KEY_PREFIX = "payrouter:channels:build:"
INDEX_KEY = "payrouter:channels:builds"
POLL_SECONDS = 0.2  # how often the report thread asks for the current channels (a change is built this fast)
HEARTBEAT_SECONDS = 5.0  # a report is renewed this often
REPORT_TTL_SECONDS = 15.0  # a process not heard of for this long is no longer live
ROLES = ("api", "worker")


@dataclass(frozen=True)
class Report:
    host: str
    pid: int
    role: str
    started_at: float
    heartbeat_at: float
    version: str | None
    built_at: float | None
    stored_version: str | None
    error: str | None
    failed_at: float | None
    unbuilt: tuple[str, ...] = ()  # the stored channels it runs without (``error`` says why)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}"

    @property
    def stale(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict:
        return {"host": self.host, "pid": self.pid, "role": self.role, "started_at": self.started_at,
                "heartbeat_at": self.heartbeat_at, "version": self.version, "built_at": self.built_at,
                "stored_version": self.stored_version, "error": self.error, "failed_at": self.failed_at,
                "unbuilt": list(self.unbuilt), "stale": self.stale}


def write(report: Report) -> None:
    """Store ``report`` for REPORT_TTL_SECONDS (and its name in the index, scored by its expiry)."""
    client = get_redis()
    expires = report.heartbeat_at + REPORT_TTL_SECONDS
    pipe = client.pipeline(transaction=False)
    pipe.set(KEY_PREFIX + report.name, json.dumps(report.to_dict()), px=int(REPORT_TTL_SECONDS * 1000))
    pipe.zadd(INDEX_KEY, {report.name: expires})
    pipe.execute()


def remove(name: str) -> None:
    client = get_redis()
    client.delete(KEY_PREFIX + name)
    client.zrem(INDEX_KEY, name)


def live() -> list[Report]:
    """The reports of every live process (one not heard of within the TTL is left out), by role,
    host and pid. Raises redis.RedisError when Redis does not answer."""
    client = get_redis()
    now = time.time()
    client.zremrangebyscore(INDEX_KEY, "-inf", now)
    names = [name.decode() if isinstance(name, bytes) else name
             for name in client.zrangebyscore(INDEX_KEY, now, "+inf")]
    if not names:
        return []
    found = []
    for raw in client.mget([KEY_PREFIX + name for name in names]):
        if raw is None:
            continue
        data = json.loads(raw)
        data.pop("stale", None)
        data["unbuilt"] = tuple(data.get("unbuilt") or ())
        found.append(Report(**data))
    return sorted(found, key=lambda r: (r.role, r.host, r.pid))


class Reporter(threading.Thread):
    """This process's report thread (see the module's doc)."""

    def __init__(self, role: str):
        super().__init__(name="payrouter-channel-builds", daemon=True)
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {ROLES}")
        self.role, self.config = role, get_config()
        self.host, self.pid, self.started_at = socket.gethostname(), os.getpid(), time.time()
        self.stopped = threading.Event()

    def report(self) -> Report:
        state = channels_runtime.state()
        return Report(host=self.host, pid=self.pid, role=self.role, started_at=self.started_at,
                      heartbeat_at=time.time(), version=state.version, built_at=state.built_at,
                      stored_version=state.stored, error=state.error, failed_at=state.failed_at,
                      unbuilt=state.unbuilt)

    def run(self) -> None:
        with scoped(self.config):
            self._loop()

    def _loop(self) -> None:
        written = 0.0
        while not self.stopped.is_set():
            try:
                channels_runtime.registry()  # rebuilt here on a change, even with no request coming
                channels_runtime.retry_failed()
            except Exception as exc:  # noqa: BLE001 - the database may be down a while: keep reporting
                log.debug("channel build check failed: %s", exc)
            if channels_runtime.pop_changed() or time.monotonic() - written >= HEARTBEAT_SECONDS:
                try:
                    write(self.report())
                    written = time.monotonic()
                except redis.RedisError as exc:  # Redis down: no report; the CLI says it cannot confirm
                    log.debug("channel build report not written: %s", exc)
            self.stopped.wait(POLL_SECONDS)
        try:
            remove(f"{self.host}:{self.pid}")  # a clean stop leaves the live list at once
        except redis.RedisError:
            pass


_reporter: Reporter | None = None
_start_lock = threading.Lock()


def start(role: str) -> Reporter:
    """Start this process's report thread (once per process; a forked child starts its own)."""
    global _reporter
    with _start_lock:
        if _reporter is None or _reporter.pid != os.getpid() or not _reporter.is_alive():
            _reporter = Reporter(role)
            _reporter.start()
        return _reporter


def stop() -> None:
    """Stop this process's report thread and withdraw its report (a clean shutdown)."""
    global _reporter
    with _start_lock:
        reporter, _reporter = _reporter, None
    if reporter is not None and reporter.pid == os.getpid():
        reporter.stopped.set()
        reporter.join(timeout=2)
