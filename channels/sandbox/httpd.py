"""A small threaded HTTP/1.1 server for the sandbox PSP: one thread per connection, connections
kept alive, bodies framed by Content-Length (or chunked), one handler for every request.

The sandbox stands in for a PSP on another host; on a single machine it shares the cores with the
router it serves, so it should cost as little as it can: a WSGI stack (gunicorn's worker loop,
Flask's request and response objects) cost about three times its own work per charge. What it
answers is plain data: ``Request`` in, ``Reply`` out.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("payrouter.sandbox.http")

MAX_LINE = 8192
MAX_HEADERS = 100
MAX_BODY = 1 << 20
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 411: "Length Required", 413: "Payload Too Large",
           422: "Unprocessable Entity", 500: "Internal Server Error", 501: "Not Implemented",
           503: "Service Unavailable"}


class BadRequest(Exception):
    """The bytes on the wire are not an HTTP/1.x request we can read; the connection is closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _read_line(rfile) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadRequest(400, "line too long")
    return line


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
_DIGITS = re.compile(r"[0-9]{1,10}")
_BODY_METHODS = ("POST", "PUT", "PATCH")


def _read_chunked(rfile) -> bytes:
    body = bytearray()
    while True:
        size_line = _read_line(rfile).split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_line):
            raise BadRequest(400, "bad chunk size")
        size = int(size_line, 16)
        if size == 0:
            while True:  # trailers, up to the blank line
                trailer = _read_line(rfile)
                if trailer in (b"\r\n", b"\n"):
                    return bytes(body)
                if not trailer:
                    raise BadRequest(400, "body ended early")
        if len(body) + size > MAX_BODY:
            raise BadRequest(413, "body too large")
        chunk = rfile.read(size)
        if len(chunk) != size or _read_line(rfile) not in (b"\r\n", b"\n"):
            raise BadRequest(400, "bad chunk")
        body += chunk


def _framing(method: str, headers: dict[str, str], duplicated: set[str]) -> int | None:
    """The body's length, or None for a chunked body; anything ambiguous is refused (and the
    connection closed), so no byte of one request can be read as the start of another."""
    if duplicated & {"content-length", "transfer-encoding"}:
        raise BadRequest(400, "Content-Length or Transfer-Encoding given twice")
    encoding, length = headers.get("transfer-encoding"), headers.get("content-length")
    if encoding is not None:
        if length is not None:
            raise BadRequest(400, "both Content-Length and Transfer-Encoding")
        if encoding.lower() != "chunked":
            raise BadRequest(501, "only the chunked transfer coding is understood")
        return None
    if length is None:
        if method in _BODY_METHODS:
            raise BadRequest(411, "Content-Length is required")
        return 0
    if not _DIGITS.fullmatch(length):
        raise BadRequest(400, "bad Content-Length")
    if int(length) > MAX_BODY:
        raise BadRequest(413, "body too large")
    return int(length)


def read_request(rfile, send_continue: Callable[[], None] = lambda: None) -> tuple[Request, bool] | None:
    """The next request on the connection and whether to keep the connection open after it;
    None when the peer closed it between requests. ``send_continue`` answers a client that waits
    for ``100 Continue`` before it sends its body (curl does, for bodies over 1 KiB)."""
    line = _read_line(rfile)
    while line in (b"\r\n", b"\n"):  # stray line breaks between requests are allowed
        line = _read_line(rfile)
    if not line:
        return None
    try:
        method, target, version = line.decode("ascii").split()
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "bad request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400, "unsupported HTTP version")
    method = method.upper()
    headers: dict[str, str] = {}
    duplicated: set[str] = set()
    for _ in range(MAX_HEADERS + 1):
        raw = _read_line(rfile)
        if raw in (b"\r\n", b"\n"):
            break
        if not raw:
            return None  # the peer went away mid-headers
        name, sep, value = raw.decode("latin-1").partition(":")
        name = name.strip().lower()
        if not sep or not name or name != name.rstrip() or " " in name:
            raise BadRequest(400, "bad header line")
        if name in headers:
            duplicated.add(name)
        headers[name] = value.strip()
    else:
        raise BadRequest(400, "too many headers")
    length = _framing(method, headers, duplicated)
    if headers.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1" and length != 0:
        send_continue()
    if length is None:
        body = _read_chunked(rfile)
    else:
        body = rfile.read(length) if length else b""
        if len(body) != length:
            return None  # the peer went away mid-body
    connection = headers.get("connection", "").lower()
    keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    try:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
    except ValueError:
        raise BadRequest(400, "bad request target") from None
    return Request(method, unquote(parts.path), query, headers, body), keep


def _header_value(value: str) -> str:
    """A header value as it may go on the wire (no line breaks: nothing can be injected)."""
    return value.replace("\r", "").replace("\n", "")


def encode_reply(reply: Reply, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Unknown')}",
            f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}",
            "Connection: " + ("keep-alive" if keep_alive else "close")]
    head.extend(f"{name}: {_header_value(value)}" for name, value in reply.headers.items())
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + reply.body


class HTTPServer:
    """Serve ``handle(request) -> Reply`` on ``host:port`` (port 0: any free port); an idle
    kept-alive connection is closed after ``idle_timeout`` seconds."""

    def __init__(self, host: str, port: int, handle: Callable[[Request], Reply], *, idle_timeout: float = 15.0,
                 max_connections: int = 512):
        self.handle = handle
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._listener = socket.create_server((host, port), backlog=128)
        self.host, self.port = host, self._listener.getsockname()[1]
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    if self._stopped.is_set():
                        return
                    continue
                with self._lock:
                    if len(self._connections) >= self.max_connections:
                        conn.close()
                        continue
                    self._connections.add(conn)
                threading.Thread(target=self._serve_connection, args=(conn,), name="sandbox-http",
                                 daemon=True).start()
        finally:
            self._close_connections()

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(self.idle_timeout)
        rfile = conn.makefile("rb", buffering=65536)
        try:
            while not self._stopped.is_set():
                try:
                    got = read_request(rfile, lambda: conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"))
                except BadRequest as exc:
                    body = json.dumps({"error": {"code": "bad_request", "message": str(exc)}}).encode()
                    conn.sendall(encode_reply(Reply(exc.status, body), keep_alive=False))
                    _lingering_close(conn)
                    return
                if got is None:
                    return
                request, keep = got
                try:
                    reply = self.handle(request)
                except Exception:  # noqa: BLE001 - a bug in a route answers 500, the server goes on
                    log.exception("sandbox: %s %s failed", request.method, request.path)
                    reply = Reply(500, b'{"error":{"code":"internal_error","message":"sandbox error"}}')
                conn.sendall(encode_reply(reply, keep))
                if not keep:
                    return
        except OSError:  # idle timeout, reset by the peer, or the server stopping
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
            rfile.close()
            conn.close()

    def request_stop(self) -> None:
        """Stop accepting; ``serve_forever`` then closes the open connections and returns. Takes no
        lock, so a signal handler may call it in the thread that runs ``serve_forever``."""
        self._stopped.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def stop(self) -> None:
        """Stop accepting and close every open connection (from another thread than serve_forever's)."""
        self.request_stop()
        self._listener.close()
        self._close_connections()

    def _close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _lingering_close(conn: socket.socket, seconds: float = 0.5) -> None:
    """Close after an error reply without resetting the connection while the client still sends
    (a reset can destroy the reply before the client reads it): stop writing, then read and drop
    what still comes, for a short while."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(seconds)
        for _ in range(64):
            if not conn.recv(65536):
                return
    except OSError:
        return
