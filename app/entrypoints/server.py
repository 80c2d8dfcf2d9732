"""Production serving: gunicorn (threads, kept-alive connections), never a debug server."""
from __future__ import annotations

import json
import socket
from typing import Callable

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser
from gunicorn.workers.gthread import ThreadWorker

from app.entrypoints import http_refusals
from app.entrypoints.http_refusals import MAX_REQUEST_LINE


class JsonErrorsWorker(ThreadWorker):
    """gunicorn's threaded worker, whose refusals of a request it cannot read (a request line or headers
    beyond its limits or malformed, a framing it will not guess at, a chunked body) are the contract's
    JSON errors (app/entrypoints/http_refusals.py) instead of gunicorn's HTML page, with the client's
    X-Request-Id when what was read of the head holds a valid one (else a fresh one); as is any other
    error gunicorn answers itself (500 ``api_error``)."""

    def handle(self, conn):
        if not conn.initialized:  # a new connection: its parser keeps what it reads of each head
            conn.init = lambda: _init_keeping_heads(conn)
        return super().handle(conn)

    def _keepalive_after(self, conn, keepalive):
        try:
            return super()._keepalive_after(conn, keepalive)
        except http_refusals.ParseError as exc:
            # The app answered without reading the body, and draining it found it malformed: the answer
            # is sent, so the connection closes without a second answer to the same request.
            self.log.warning("Invalid request body from ip=%s after its answer: %s", (conn.client or ("",))[0], exc)
            return False

    def handle_error(self, req, client, addr, exc):
        answer = http_refusals.refusal(exc)
        if answer is None or answer is http_refusals.INTERNAL:  # a fault of ours, not the client's
            self.log.exception("Error handling request")
            answer = http_refusals.INTERNAL
        else:
            self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        try:
            util.write_nonblock(client, refusal_response(answer, _client_request_id(req, client, exc)))
        except Exception:  # noqa: BLE001 - the client went away: nothing to answer
            self.log.debug("Failed to send error message.")


class _HeadKeepingRequest(Request):
    """gunicorn's request, keeping the first ``HEAD_KEPT`` bytes of its head as they arrive; when the head
    cannot be read, they travel on the refusal (``head_seen``) for its X-Request-Id."""

    def __init__(self, *args, **kwargs):
        self.head_seen = bytearray()
        try:
            super().__init__(*args, **kwargs)
        except http_refusals.ParseError as exc:
            exc.head_seen = bytes(self.head_seen)
            raise

    def read_into(self, unreader, buf, stop=False):
        before = len(buf)
        super().read_into(unreader, buf, stop)
        room = http_refusals.HEAD_KEPT - len(self.head_seen)
        if room > 0:
            self.head_seen += buf[before:before + room]


def _init_keeping_heads(conn) -> None:
    type(conn).init(conn)
    if type(conn.parser) is RequestParser:  # HTTP/1.x (not h2, not uwsgi)
        conn.parser.mesg_class = _HeadKeepingRequest


def _client_request_id(req, client, exc) -> str | None:
    """The client's valid X-Request-Id, from the headers gunicorn parsed if it got that far, else from
    what it read of the head, with what the client already sent beyond it (never waiting for more),
    all within ``HEAD_KEPT`` bytes; None if there is none."""
    parsed = req if req is not None else getattr(exc, "req", None)
    if parsed is not None and getattr(parsed, "headers", None):
        return http_refusals.request_id_from_headers(parsed.headers)
    head = bytes(getattr(exc, "head_seen", b""))
    flags = getattr(socket, "MSG_DONTWAIT", 0)
    while flags and b"\r\n\r\n" not in head and len(head) < http_refusals.HEAD_KEPT:
        try:
            more = client.recv(http_refusals.HEAD_KEPT - len(head), flags)
        except OSError:  # nothing more has arrived (or the client is gone)
            break
        if not more:
            break
        head += more
    return http_refusals.request_id_from_head(head)


def refusal_response(answer: http_refusals.Refusal, client_request_id: str | None = None) -> bytes:
    """A whole HTTP/1.1 response refusing a request gunicorn would not read (the connection closes)."""
    from app import context
    from app.entrypoints.api.errors import error_body

    request_id = client_request_id or context.new_request_id()
    with context.bound(request_id):
        body = json.dumps(error_body(answer.kind, answer.code, answer.message)).encode()
    head = (f"HTTP/1.1 {answer.status} {answer.reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{context.REQUEST_ID_HEADER}: {request_id}\r\n\r\n")
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
