"""HTTP/1.1 with kept-alive connections to one channel host, for the sandbox client.

Why not urllib3 (used before): every answer went through http.client, which parses headers
with the email package; on a payment that was 17 % of the API's CPU, more than any other
single step (py-spy, bench/payments.py). The sandbox answers small JSON bodies, and the client
needs only the status and the body, so this reads the status line, Content-Length or chunked
framing and Connection, and nothing else.

What can go wrong is reported by kind, so that the caller (channels.sandbox.client) decides
what each means for money:

- ``NotSent``: no connection could be made (refused, unresolvable, connect timeout): the
  request never left; ``UnsafeRequest``, one of them, is a request refused before any
  connection: a header name or value, the method or the target that could end a line (CR,
  LF), cut a string (NUL) or otherwise change the request's framing — no input can add a
  header or a request;
- ``Dropped``: the connection failed or closed while the request went out or before any
  answer came (a kept-alive connection the channel had just closed looks like this);
- ``ReadTimeout``: sent, and no complete answer within the timeout;
- ``BadAnswer``: an answer that is not HTTP/1.x as expected.
"""
from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import time
from collections import deque
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
MAX_IDLE_SECONDS = 1.5  # below common keep-alive defaults (gunicorn: 2 s): reuse only what a server still keeps
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a method or a header name
_TARGET = re.compile(r"[!-~]+")  # visible ASCII, no space: callers percent-encode what they put in a URL
_BAD_VALUE = re.compile(r"[\r\n\x00]")


class TransportError(Exception):
    pass


class NotSent(TransportError):
    pass


class UnsafeRequest(NotSent):
    pass


class Dropped(TransportError):
    pass


class ReadTimeout(TransportError):
    pass


class BadAnswer(TransportError):
    pass


def _head(method: str, target: str, host: str, headers: dict[str, str], length: int | None) -> bytes:
    """The request line and the headers, or ``UnsafeRequest`` if any part could change their framing."""
    if not _TOKEN.fullmatch(method):
        raise UnsafeRequest(f"method {method!r} is not a token")
    if not _TARGET.fullmatch(target):
        raise UnsafeRequest(f"request target {target!r} has a space, a control or "
                            "a non-ASCII character (not percent-encoded)")
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in (("Host", host), *headers.items()):
        value = str(value)
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise UnsafeRequest(f"header {name!r} has a name that is not a token or a "
                                "value with CR, LF or NUL")
        lines.append(f"{name}: {value}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise UnsafeRequest("a header has a character outside Latin-1") from None


class _Connection:
    __slots__ = ("sock", "buffer", "idle_since")

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer, self.idle_since = sock, b"", 0.0

    def still_open(self) -> bool:
        """An idle kept-alive connection is fit for another request only if the channel has
        neither closed it nor sent anything on it meanwhile (either makes it readable)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Dropped("connection closed by the channel")
        self.buffer += chunk

    def read_until(self, marker: bytes, limit: int) -> bytes:
        while (at := self.buffer.find(marker)) < 0:
            if len(self.buffer) > limit:
                raise BadAnswer("answer head too long")
            self._fill()
        data, self.buffer = self.buffer[:at], self.buffer[at + len(marker):]
        return data

    def read_exactly(self, size: int) -> bytes:
        if size > MAX_BODY:
            raise BadAnswer("answer body too large")
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_to_end(self) -> bytes:
        try:
            while len(self.buffer) <= MAX_BODY:
                self._fill()
        except Dropped:
            data, self.buffer = self.buffer, b""
            return data
        raise BadAnswer("answer body too large")


class Transport:
    """Kept-alive connections to ``base_url``'s host, reused by any thread (at most ``pool_size``
    kept idle). ``timeout_s`` bounds the connect, and each wait for the channel's answer."""

    def __init__(self, base_url: str, timeout_s: float, pool_size: int = 32):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        default_port = (parts.scheme == "https" and self.port == 443) or (parts.scheme == "http" and self.port == 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.prefix = parts.path.rstrip("/")  # a base URL's own path, put before every request's
        self.timeout_s = timeout_s
        self.pool_size = pool_size
        self._idle: deque[_Connection] = deque()
        self._lock = threading.Lock()

    def _connect(self) -> _Connection:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:  # refused, unresolvable, unreachable, connect timeout
            raise NotSent(f"cannot connect to {self.host_header}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            except OSError as exc:
                sock.close()
                raise NotSent(f"TLS with {self.host_header} failed: {exc}") from exc
        return _Connection(sock)

    def _checkout(self, fresh: bool) -> _Connection:
        """The most recently used idle connection the channel still keeps open, else a new one.
        (One the channel closes between this check and the request is still possible: the
        caller treats that as a dropped request.)"""
        while not fresh:
            with self._lock:
                if not self._idle:
                    break
                conn = self._idle.pop()
            if time.monotonic() - conn.idle_since < MAX_IDLE_SECONDS and conn.still_open():
                return conn
            conn.close()
        return self._connect()

    def _checkin(self, conn: _Connection) -> None:
        if conn.buffer:  # bytes beyond the answer: the connection cannot be trusted with another
            conn.close()
            return
        conn.idle_since = time.monotonic()
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        conn.close()

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes | None = None,
                fresh: bool = False) -> tuple[int, bytes]:
        """Send one request; the status and the body of the answer. ``fresh``: on a new connection.
        ``UnsafeRequest`` (nothing sent) for a header or target that could change the request."""
        length = len(body or b"") if body is not None or method == "POST" else None
        payload = _head(method, target, self.host_header, headers, length) + (body or b"")
        conn = self._checkout(fresh)
        try:
            try:
                conn.sock.sendall(payload)
            except OSError as exc:  # a timeout included: part of it may have gone out
                raise Dropped(f"connection lost while sending: {exc}") from exc
            status, data, keep = self._answer(conn, method)
        except socket.timeout as exc:
            conn.close()
            raise ReadTimeout(f"no answer within {self.timeout_s:g}s") from exc
        except OSError as exc:
            conn.close()
            raise Dropped(f"connection lost before the answer: {exc}") from exc
        except TransportError:
            conn.close()
            raise
        if keep:
            self._checkin(conn)
        else:
            conn.close()
        return status, data

    def _answer(self, conn: _Connection, method: str) -> tuple[int, bytes, bool]:
        while True:
            head = conn.read_until(b"\r\n\r\n", MAX_HEAD).split(b"\r\n")
            version, _, rest = head[0].partition(b" ")
            code = rest[:3]
            if version not in (b"HTTP/1.1", b"HTTP/1.0") or not code.isdigit():
                raise BadAnswer(f"not an HTTP answer: {head[0][:80]!r}")
            status = int(code)
            fields: dict[bytes, bytes] = {}
            for line in head[1:]:
                name, colon, value = line.partition(b":")
                if not colon:
                    raise BadAnswer(f"bad header line: {line[:80]!r}")
                fields[name.strip().lower()] = value.strip()
            if 100 <= status < 200:  # an interim answer: the real one follows
                continue
            connection = fields.get(b"connection", b"").lower()
            keep = connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
            if method == "HEAD" or status in (204, 304):
                return status, b"", keep
            if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
                return status, self._chunks(conn), keep
            if b"content-length" in fields:
                try:
                    size = int(fields[b"content-length"])
                except ValueError:
                    raise BadAnswer("bad Content-Length") from None
                if size < 0:
                    raise BadAnswer("bad Content-Length")
                return status, conn.read_exactly(size), keep
            return status, conn.read_to_end(), False

    @staticmethod
    def _chunks(conn: _Connection) -> bytes:
        parts, total = [], 0
        while True:
            size_line = conn.read_until(b"\r\n", 1024).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadAnswer("bad chunk size") from None
            if size == 0:
                while conn.read_until(b"\r\n", MAX_HEAD):  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            total += size
            parts.append(conn.read_exactly(size if total <= MAX_BODY else MAX_BODY + 1))
            conn.read_exactly(2)  # the chunk's CRLF

    def close(self) -> None:
        with self._lock:
            while self._idle:
                self._idle.pop().close()
