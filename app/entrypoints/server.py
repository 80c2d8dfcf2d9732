"""Production serving: gunicorn (threads, kept-alive connections), never a debug server."""
from __future__ import annotations

import json
from typing import Callable

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker

# The longest request line (method, URL, version) gunicorn reads: its maximum (it refuses more).
MAX_REQUEST_LINE = 8190
# What gunicorn refuses before the app sees a request, answered in the contract's error shape
# (its own answer is an HTML page).
_TOO_LARGE = {
    LimitRequestLine: dict(status=414, reason="URI Too Long", code="uri_too_long",
                           message=f"the request line (method, URL, version) is longer than {MAX_REQUEST_LINE} bytes"),
    LimitRequestHeaders: dict(status=431, reason="Request Header Fields Too Large", code="request_headers_too_large",
                              message="the request's headers are too many or too large"),
}


class JsonErrorsWorker(ThreadWorker):
    """gunicorn's threaded worker, whose refusal of a request line or headers beyond its limits is the
    contract's JSON error (``invalid_request_error``, a fresh ``request_id``: the request's own header
    was never read) instead of gunicorn's HTML page. Every other error is gunicorn's as before."""

    def handle_error(self, req, client, addr, exc):
        refusal = next((answer for cls, answer in _TOO_LARGE.items() if isinstance(exc, cls)), None)
        if refusal is None:
            return super().handle_error(req, client, addr, exc)
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        try:
            util.write_nonblock(client, too_large_response(**refusal))
        except Exception:  # noqa: BLE001 - the client went away: nothing to answer
            self.log.debug("Failed to send error message.")


def too_large_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response refusing a request gunicorn would not read (the connection closes)."""
    from app import context
    from app.entrypoints.api.errors import error_body

    request_id = context.new_request_id()
    with context.bound(request_id):
        body = json.dumps(error_body("invalid_request_error", code, message)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-Id: {request_id}\r\n\r\n")
    return head.encode("latin-1") + body


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict, load: Callable):
        self.options = options
        self._load = load
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self._load()


def serve(load: Callable, host: str, port: int, *, workers: int, threads: int, preload: bool,
          post_fork: Callable | None = None, worker_exit: Callable | None = None, keepalive: int = 2) -> None:
    """Serve the WSGI app ``load()`` returns with gunicorn's threaded workers until stopped.
    ``preload``: build the app once in the master, before the fork (else in each worker).
    ``keepalive``: seconds an idle kept-alive connection is kept open."""
    options = {"bind": f"{host}:{port}", "workers": workers, "threads": threads,
               "worker_class": JsonErrorsWorker, "limit_request_line": MAX_REQUEST_LINE,
               "timeout": 60, "graceful_timeout": 10, "accesslog": None, "preload_app": preload,
               "keepalive": keepalive,
               "control_socket_disable": True}  # no shared ~/.gunicorn socket between servers
    if post_fork is not None:
        options["post_fork"] = post_fork
    if worker_exit is not None:
        options["worker_exit"] = worker_exit
    options["child_exit"] = _child_exit
    _Gunicorn(options, load).run()


def _load_api():
    from app.entrypoints.tuning import tune_gc_for_serving
    from app.entrypoints.web import create_app

    app = create_app()
    tune_gc_for_serving()  # in the master, before the fork: workers share the frozen pages
    return app


def _post_fork(_server, _worker):
    # Each worker process opens its own database and Redis connections.
    from app.adapters import db, redis_conn

    db.dispose_all()
    redis_conn.reset()
    import gc

    from app.entrypoints.tuning import GC_THRESHOLDS

    gc.set_threshold(*GC_THRESHOLDS)
    from app.adapters import channel_builds, channels_runtime

    # The master built the channels at boot: a worker forked later (a respawn) builds the stored ones.
    channels_runtime.after_fork()

    channel_builds.start("api")  # this worker's channel build, reported (and kept current) for `channels import`


def _child_exit(server, worker):
    """In the master, once a worker is gone (killed included): its live gauges leave /metrics and its
    channel build report leaves the live list at once (not after its TTL: `channels import` and
    `rules publish` stop counting a process that no longer exists)."""
    from app.adapters.metrics_dir import worker_exited

    worker_exited(server, worker)
    import socket

    import redis

    from app.adapters import channel_builds

    try:
        channel_builds.remove(f"{socket.gethostname()}:{worker.pid}")
    except redis.RedisError:  # Redis down: the report expires by itself
        pass


def _worker_exit(_server, _worker):
    from app.adapters import channel_builds

    channel_builds.stop()  # its build report withdrawn: `channels import` no longer waits for it


def run(host: str, port: int, workers: int = 2, threads: int = 8) -> None:
    serve(_load_api, host, port, workers=workers, threads=threads, preload=True, post_fork=_post_fork,
          worker_exit=_worker_exit)
