"""How the sandbox PSP is served: its routes (``handle(Request) -> Reply``, channels.sandbox.server)
as a WSGI application on waitress, a maintained pure-Python server that runs in one process
(the operations live in the sandbox's memory) with a pool of threads, keeps connections alive,
reads chunked request bodies and streams an answer of unknown length chunked.

``Server`` runs in a thread of the caller (tests, the demo) or in the foreground
(``payrouter sandbox``); ``stop`` closes the listener and every open connection, as a host that
went down would.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Callable, Iterable
from urllib.parse import parse_qsl

from waitress.server import create_server

log = logging.getLogger("payrouter.sandbox.http")

MAX_BODY = 1 << 20
THREADS = 32  # outcome 54 holds a thread past the caller's timeout: enough for many at once
IDLE_TIMEOUT_S = 15  # kept-alive connections idle this long are closed (the client checks before reuse)


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass
class Reply:
    status: int
    body: bytes | Iterable[bytes]  # an iterable is sent as it comes (chunked), of any size
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _request(environ: dict) -> Request:
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    stream = environ["wsgi.input"]
    body = stream.read() if environ.get("wsgi.input_terminated") else stream.read(int(environ.get("CONTENT_LENGTH")
                                                                                       or 0))
    path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")  # WSGI's str is bytes
    return Request(environ["REQUEST_METHOD"].upper(), path, dict(parse_qsl(environ.get("QUERY_STRING", ""))),
                   headers, body)


def _header_value(value: str) -> str:
    """A header value as it may go on the wire (no line breaks: nothing can be injected)."""
    return value.replace("\r", "").replace("\n", "")


def wsgi_app(handle: Callable[[Request], Reply]) -> Callable:
    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            reply = handle(_request(environ))
        except Exception:  # noqa: BLE001 - a bug in a route answers 500, the server goes on
            log.exception("sandbox: %s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            reply = Reply(500, b'{"error":{"code":"internal_error","message":"sandbox error"}}')
        headers = [("Content-Type", reply.content_type)]
        headers.extend((name, _header_value(value)) for name, value in reply.headers.items())
        body = reply.body
        if isinstance(body, bytes):
            headers.append(("Content-Length", str(len(body))))
            body = [body]
        try:
            phrase = HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = "Unknown"
        start_response(f"{reply.status} {phrase}", headers)
        return body

    return app


class Server:
    """``handle`` served on ``host:port`` (port 0: any free port, then ``self.port``)."""

    def __init__(self, host: str, port: int, handle: Callable[[Request], Reply], *, threads: int = THREADS,
                 idle_timeout: int = IDLE_TIMEOUT_S):
        self._map: dict = {}  # waitress's dispatchers (the listener, the wake-up pipe, each connection)
        self._server = create_server(wsgi_app(handle), map=self._map, host=host, port=port, threads=threads,
                                     channel_timeout=idle_timeout, cleanup_interval=max(1, idle_timeout // 2),
                                     connection_limit=512,
                                     max_request_body_size=MAX_BODY, ident="payrouter-sandbox",
                                     clear_untrusted_proxy_headers=True)
        self.host, self.port = host, self._server.effective_port
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        """Serve until ``request_stop``/``stop``."""
        self._server.run()
        self._stopped.set()

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self.serve_forever, name="sandbox-server", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Close the listener and every connection, in the serving thread (the loop then ends);
        a second call does nothing."""
        if not self._stopping:
            self._stopping = True
            try:
                self._server.trigger.pull_trigger(self._close_all)
            except OSError:  # the wake-up pipe is already closed (the loop is ending): close from here
                self._close_all()

    def stop(self) -> None:
        if self._thread is None:  # never served: nothing runs the loop to close what is open
            if not self._stopping:
                self._stopping = True
                self._close_all()
            return
        self.request_stop()
        self._thread.join(timeout=5)

    def _close_all(self) -> None:
        for dispatcher in list(self._map.values()):
            if dispatcher is not self._server.trigger:
                with contextlib.suppress(OSError):  # a connection the peer or the loop already closed
                    dispatcher.close()
        with contextlib.suppress(OSError):
            self._server.close()  # the listener and the wake-up pipe: the map is empty, the loop returns
        self._server.task_dispatcher.set_thread_count(0)  # idle threads leave; a busy one when done
