"""A small threaded HTTP/1.1 server for the sandbox PSP: one thread per connection, connections
kept alive, bodies framed by Content-Length (or chunked), one handler for every request.

The sandbox stands in for a PSP on another host; on a single machine it shares the cores with the
router it serves, so it should cost as little as it can: a WSGI stack (gunicorn's worker loop,
Flask's request and response objects) cost about three times its own work per charge. What it
answers is plain data: ``Request`` in, ``Reply`` out.
"""
from __future__ import annotations

import logging
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


def _read_chunked(rfile) -> bytes:
    body = bytearray()
    while True:
        size_line = _read_line(rfile).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise BadRequest(400, "bad chunk size") from None
        if size == 0:
            while _read_line(rfile) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise BadRequest(413, "body too large")
        body += rfile.read(size)
        _read_line(rfile)  # the CRLF after the chunk


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
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        raw = _read_line(rfile)
        if raw in (b"\r\n", b"\n"):
            break
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name.strip():
            raise BadRequest(400, "bad header line")
        headers[name.strip().lower()] = value.strip()
    else:
        raise BadRequest(400, "too many headers")
    if headers.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1":
        send_continue()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(rfile)
    else:
        length = headers.get("content-length", "0") or "0"
        if not length.isdigit():
            raise BadRequest(400, "bad Content-Length")
        if int(length) > MAX_BODY:
            raise BadRequest(413, "body too large")
        body = rfile.read(int(length)) if int(length) else b""
        if len(body) != int(length):
            return None  # the peer went away mid-body
    connection = headers.get("connection", "").lower()
    keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    parts = urlsplit(target)
    request = Request(method.upper(), unquote(parts.path), dict(parse_qsl(parts.query)), headers, body)
    return request, keep


def encode_reply(reply: Reply, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Unknown')}",
            f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}",
            "Connection: " + ("keep-alive" if keep_alive else "close")]
    head.extend(f"{name}: {value}" for name, value in reply.headers.items())
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body


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

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(self.idle_timeout)
        rfile = conn.makefile("rb", buffering=65536)
        try:
            while not self._stopped.is_set():
                try:
                    got = read_request(rfile, lambda: conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"))
                except BadRequest as exc:
                    conn.sendall(encode_reply(Reply(exc.status, b'{"error":{"code":"bad_request","message":"'
                                                    + str(exc).encode() + b'"}}'), keep_alive=False))
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

    def stop(self) -> None:
        """Stop accepting and close every open connection."""
        self._stopped.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
