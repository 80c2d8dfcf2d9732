"""The one channel HTTP layer: sending a channel's requests and classifying what went wrong.

An adapter builds a request (method, path, headers, body) and maps the answer; this module sends
it over a pool of kept-alive connections to the channel's host (urllib3), within the channel's
time limits, with TLS certificates verified, and turns every fault into one of the two the
router acts on (channels.base):

- ``ChannelUnavailable`` (nothing was charged: safe to fail over): no connection could be made
  (refused, unresolvable, connect timeout, TLS handshake or certificate failure); a request
  refused before sending (a method, target or header that could change the request's framing:
  ``RequestNotSent``, which the router never counts against the channel's circuit);
  an answer the adapter names as a refusal (HTTP 5xx, and the statuses it passes as
  ``refused``); a read (GET, HEAD) that failed in any other way, as a read charges nothing.
- ``ChannelTimeout`` (unknown: query it later, never fail over): sent and no answer within the
  read timeout; a change (POST…) whose answer could not be read.

A request dropped before any answer (a kept-alive connection the channel closed as the request
went out looks the same as one the channel dropped after reading it) is sent once more on
another connection when sending it twice is harmless: a read, or a change carrying an
``Idempotency-Key`` (the channel gives back the same operation). As the first may have been
processed, whatever the second meets is unknown for a change, never a refusal.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from http.client import IncompleteRead
from typing import Collection, Iterator, Mapping
from urllib.parse import urlencode, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from channels.base import ChannelTimeout, ChannelUnavailable, RequestNotSent

READS = frozenset({"GET", "HEAD"})
MAX_BUFFERED_BODY = 16 * 1024 * 1024  # ``request`` holds an answer in memory; ``stream`` has no cap
STREAM_CHUNK = 64 * 1024
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a method or a header name
_TARGET = re.compile(r"[!-~]+")  # visible ASCII, no space: callers percent-encode what they put in a URL
_BAD_VALUE = re.compile(r"[\r\n\x00]")


class _NotConnected(NewConnectionError):
    """Connecting failed (TCP or TLS): nothing of the request left."""


class _Connecting:
    """Makes any failure while connecting, TLS included, a ``NewConnectionError``: urllib3 reports a
    certificate failure as the same ``SSLError`` as one met after the request went out."""

    def connect(self) -> None:
        try:
            super().connect()  # type: ignore[misc]
        except ConnectTimeoutError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever it was, no byte of the request was sent
            raise _NotConnected(self, f"cannot connect: {exc}") from exc  # type: ignore[arg-type]


class _HTTPConnection(_Connecting, HTTPConnection):
    pass


class _HTTPSConnection(_Connecting, HTTPSConnection):
    pass


class Answer:
    """A channel's answer: ``status``, ``headers`` (case-insensitive) and ``data`` (the body)."""

    __slots__ = ("status", "headers", "data")

    def __init__(self, status: int, headers: Mapping[str, str], data: bytes):
        self.status, self.headers, self.data = status, headers, data

    @property
    def ok(self) -> bool:
        return self.status < 400


class Streamed:
    """An answer whose body is read piece by piece (``chunks``): no size cap, the read timeout
    bounds each wait for the next piece."""

    def __init__(self, http: "ChannelHTTP", method: str, path: str, response: urllib3.BaseHTTPResponse):
        self._http, self._method, self._path, self._response = http, method, path, response
        self.status, self.headers = response.status, response.headers
        self.finished = False

    def chunks(self, size: int = STREAM_CHUNK) -> Iterator[bytes]:
        try:
            yield from self._response.stream(size)
            self.finished = True
        except ReadTimeoutError as exc:
            raise ChannelTimeout(f"{self._http.channel_id}: no more of the answer within "
                                 f"{self._http.read_timeout_s:g}s ({self._method} {self._path})") from exc
        except HTTPError as exc:
            raise self._http._unreadable(self._method, self._path, exc) from exc


class ChannelHTTP:
    """One channel's host (``base_url``, whose path prefixes every request's): at most
    ``pool_size`` connections kept alive, shared by every thread."""

    def __init__(self, channel_id: str, base_url: str, *, connect_timeout_s: float, read_timeout_s: float,
                 pool_size: int = 32, ca_certs: str | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"channel {channel_id}: not an http(s) URL: {base_url!r}")
        self.channel_id = channel_id
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)
        options = dict(port=parts.port, maxsize=pool_size, block=False, timeout=timeout, retries=False)
        if parts.scheme == "https":
            self._pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
                parts.hostname, cert_reqs="CERT_REQUIRED", ca_certs=ca_certs, **options)
            self._pool.ConnectionCls = _HTTPSConnection
        else:
            self._pool = urllib3.HTTPConnectionPool(parts.hostname, **options)
            self._pool.ConnectionCls = _HTTPConnection

    def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, body: bytes | None = None,
                refused: Collection[int] = ()) -> Answer:
        """Send one request and read its answer (up to ``MAX_BUFFERED_BODY``). An answer of HTTP
        5xx or a status in ``refused`` is ``ChannelUnavailable``; any other is returned."""
        target, headers = self._checked(method, path, params, headers)
        try:
            answer = self._send(method, target, headers, body)
        except _Dropped as dropped:
            if not self._resendable(method, headers):
                raise ChannelTimeout(f"{self.channel_id}: connection lost after sending ({method} {path})") from dropped
            answer = self._resend(method, path, target, headers, body, dropped)
            if method not in READS:
                if not 200 <= answer.status < 300:
                    raise ChannelTimeout(f"{self.channel_id}: connection lost after sending ({method} {path}), "
                                         f"and the retry answered HTTP {answer.status}") from dropped
                return answer
        except HTTPError as exc:
            raise self._fault(method, path, exc) from exc
        if answer.status >= 500 or answer.status in refused:
            raise ChannelUnavailable(f"{self.channel_id}: channel answered HTTP {answer.status}")
        return answer

    @contextmanager
    def stream(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None, refused: Collection[int] = ()) -> Iterator[Streamed]:
        """Send one request and hand its answer over unread (``Streamed.chunks``), for bodies of
        any size; faults as ``request`` (a dropped read is sent once more, on another connection)."""
        target, headers = self._checked(method, path, params, headers)
        try:
            try:
                response = self._urlopen(method, target, headers, None, stream=True)
            except ProtocolError as exc:
                if not _dropped(exc) or not self._resendable(method, headers):
                    raise
                response = self._urlopen(method, target, headers, None, stream=True)
        except HTTPError as exc:
            raise self._fault(method, path, exc) from exc
        streamed = None
        try:
            if response.status >= 500 or response.status in refused:
                raise ChannelUnavailable(f"{self.channel_id}: channel answered HTTP {response.status}")
            streamed = Streamed(self, method, path, response)
            yield streamed
        finally:
            if not (streamed and streamed.finished):  # not read to the end: the connection cannot carry another
                response.close()
            response.release_conn()

    def close(self) -> None:
        self._pool.close()

    def _checked(self, method: str, path: str, params, headers) -> tuple[str, dict[str, str]]:
        """The request target and the headers, or ``RequestNotSent`` (nothing sent) if any part
        could end a line, cut a string or otherwise change the request: no input adds a header."""
        target = self.prefix + path + (("?" + urlencode(params)) if params else "")
        problem = None
        if not _TOKEN.fullmatch(method):
            problem = f"method {method!r} is not a token"
        elif not _TARGET.fullmatch(target):
            problem = f"request target {target!r} has a space, a control or a non-ASCII character"
        checked = {}
        for name, value in (headers or {}).items():
            value = str(value)
            if problem is None and (not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value)
                                    or not value.isascii() and not _latin1(value)):
                problem = (f"header {name!r} has a name that is not a token or a value with CR, LF, NUL "
                           "or a character outside Latin-1")  # the value (a credential, say) never echoed
            checked[name] = value
        if problem is not None:
            raise RequestNotSent(f"{self.channel_id}: request refused before sending ({method} {path}): {problem}")
        return target, checked

    def _urlopen(self, method: str, target: str, headers: dict, body: bytes | None,
                 stream: bool = False) -> urllib3.BaseHTTPResponse:
        return self._pool.urlopen(method, target, body=body, headers=headers, retries=False, redirect=False,
                                  assert_same_host=False, preload_content=not stream, release_conn=not stream)

    def _send(self, method: str, target: str, headers: dict, body: bytes | None) -> Answer:
        try:
            response = self._urlopen(method, target, headers, body, stream=True)
        except ProtocolError as exc:
            if _dropped(exc):
                raise _Dropped(str(exc)) from exc
            raise
        try:
            data = _read_all(response)
        except ProtocolError as exc:
            response.close()
            if _dropped(exc):
                raise _Dropped(str(exc)) from exc
            raise
        except BaseException:
            response.close()
            raise
        finally:
            response.release_conn()
        return Answer(response.status, response.headers, data)

    @staticmethod
    def _resendable(method: str, headers: Mapping[str, str]) -> bool:
        return method in READS or any(name.lower() == "idempotency-key" for name in headers)

    def _resend(self, method: str, path: str, target: str, headers: dict, body: bytes | None,
                dropped: Exception) -> Answer:
        try:
            return self._send(method, target, headers, body)
        except (_Dropped, HTTPError) as exc:
            if method in READS:
                raise self._fault(method, path, exc) from exc
            raise ChannelTimeout(f"{self.channel_id}: connection lost after sending ({method} {path}), "
                                 f"and the retry failed: {exc}") from dropped

    def _fault(self, method: str, path: str, exc: Exception) -> Exception:
        if isinstance(exc, ReadTimeoutError):  # sent, and silence
            return ChannelTimeout(f"{self.channel_id}: no answer within {self.read_timeout_s:g}s ({method} {path})")
        if isinstance(exc, ConnectTimeoutError):  # refused, unresolvable, no connection in time, TLS failed
            return ChannelUnavailable(f"{self.channel_id}: channel unreachable: {exc}")
        return self._unreadable(method, path, exc)

    def _unreadable(self, method: str, path: str, exc: Exception) -> Exception:
        """Sent, and the answer was lost or garbled: harmless for a read, unknown for a change."""
        if method in READS:
            return ChannelUnavailable(f"{self.channel_id}: channel unreachable: {exc}")
        return ChannelTimeout(f"{self.channel_id}: connection lost after sending ({method} {path})")


class _Dropped(HTTPError):
    """The connection closed, or was reset, before the whole answer came."""


class _BadAnswer(HTTPError):
    """An answer that is not HTTP as expected."""


def _dropped(exc: ProtocolError) -> bool:
    cause = exc.args[1] if len(exc.args) > 1 else exc.__context__
    return isinstance(cause, (OSError, IncompleteRead))


def _read_all(response: urllib3.BaseHTTPResponse) -> bytes:
    length = response.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise _BadAnswer(f"bad Content-Length {length[:20]!r}")
    if response.length_remaining is not None:
        if response.length_remaining > MAX_BUFFERED_BODY:
            raise _BadAnswer("answer body too large")
        return response.read()
    parts, total = [], 0
    for chunk in response.stream(STREAM_CHUNK):
        total += len(chunk)
        if total > MAX_BUFFERED_BODY:
            raise _BadAnswer("answer body too large")
        parts.append(chunk)
    return b"".join(parts)


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def for_channel(channel_id: str, base_url: str, timeout_ms: int, config: Mapping[str, object] | None = None,
                pool_size: int = 32) -> ChannelHTTP:
    """The layer for one channel instance: ``timeout_ms`` bounds the connect and each wait for the
    answer; ``config.connect_timeout_ms`` (optional) sets the connect's bound apart."""
    connect_ms = (config or {}).get("connect_timeout_ms") or timeout_ms
    return ChannelHTTP(channel_id, base_url, connect_timeout_s=int(connect_ms) / 1000,
                       read_timeout_s=timeout_ms / 1000, pool_size=pool_size)
