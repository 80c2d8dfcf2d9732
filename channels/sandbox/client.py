"""HTTP transport to the sandbox PSP, and the one place its transport faults are classified.

- connection refused / connect timeout / HTTP 5xx, 401, 403, 404, 429 on a POST → ChannelUnavailable
  (the request was not processed: safe to re-route);
- read timeout, or a connection dropped after a POST was sent → ChannelTimeout (outcome unknown);
- other 4xx answers are returned to the adapter, which maps them to a failed result.

The connections are kept alive (channels.sandbox.transport: a thread-safe pool, no retries of
its own), so a payment pays for neither a new TCP connection to the channel nor a general
HTTP client's work on every answer.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from app import context
from channels.base import ChannelTimeout, ChannelUnavailable
from channels.sandbox.transport import Dropped, NotSent, ReadTimeout, Transport, TransportError, UnsafeRequest

UNAVAILABLE_STATUSES = {401, 403, 404, 429}


class Response:
    __slots__ = ("status", "data")

    def __init__(self, status: int, data: bytes):
        self.status, self.data = status, data

    @property
    def ok(self) -> bool:
        return self.status < 400


class SandboxClient:
    """One channel instance's HTTP client. ``timeout_ms`` bounds connect and read, each."""

    def __init__(self, base_url: str, channel_id: str, secret: str, timeout_ms: int, pool_size: int = 32):
        self.base_url = base_url.rstrip("/")
        self.channel_id = channel_id
        self.secret = secret
        self.timeout_s = timeout_ms / 1000
        self._transport = Transport(self.base_url, self.timeout_s, pool_size)

    def _headers(self, idempotency_key: str | None = None, json_body: bool = False) -> dict:
        headers = {"Authorization": f"Bearer {self.secret}", "Accept": "application/json",
                   "X-Sandbox-Timeout-Ms": str(int(self.timeout_s * 1000))}
        if json_body:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return context.outgoing_headers(headers)

    def _send(self, method: str, path: str, params: dict | None = None, body: bytes | None = None,
              headers: dict | None = None) -> Response:
        target = self._transport.prefix + path + (("?" + urlencode(params)) if params else "")
        try:
            return self._checked(method, Response(*self._transport.request(method, target, headers or {}, body)))
        except Dropped as exc:
            dropped = exc
        except TransportError as exc:
            raise self._fault(method, path, exc) from exc
        # A kept-alive connection the channel had just closed, or one dropped after the request went
        # out: send once more on a new connection (a POST carries the attempt's Idempotency-Key, so a
        # channel that did receive the first gives back the same operation). As the first POST may
        # have been processed, whatever its retry meets is an unknown outcome, never a refusal.
        try:
            resp = Response(*self._transport.request(method, target, headers or {}, body, fresh=True))
        except TransportError as exc:
            if method != "POST":
                raise self._fault(method, path, exc) from exc
            raise ChannelTimeout(f"{self.channel_id}: connection lost after sending ({method} {path}), "
                                 f"and the retry failed: {exc}") from dropped
        if method == "POST" and not 200 <= resp.status < 300:
            raise ChannelTimeout(f"{self.channel_id}: connection lost after sending ({method} {path}), "
                                 f"and the retry answered HTTP {resp.status}") from dropped
        return self._checked(method, resp)

    def _fault(self, method: str, path: str, exc: TransportError) -> Exception:
        if isinstance(exc, ReadTimeout):
            return ChannelTimeout(f"{self.channel_id}: no answer within {self.timeout_s:g}s ({method} {path})")
        if isinstance(exc, UnsafeRequest):  # a header or target that could add to the request: never sent
            return ChannelUnavailable(f"{self.channel_id}: request refused before sending ({method} {path}): {exc}")
        if isinstance(exc, NotSent):  # refused, unresolvable or no connection in time: never sent
            return ChannelUnavailable(f"{self.channel_id}: channel unreachable: {exc}")
        if method == "GET":
            return ChannelUnavailable(f"{self.channel_id}: channel unreachable: {exc}")
        return ChannelTimeout(f"{self.channel_id}: connection lost after sending ({method} {path})")

    def _checked(self, method: str, resp: Response) -> Response:
        if resp.status >= 500 or resp.status in UNAVAILABLE_STATUSES and method == "POST":
            raise ChannelUnavailable(f"{self.channel_id}: channel answered HTTP {resp.status}")
        return resp

    def post(self, path: str, payload: dict, idempotency_key: str) -> tuple[int, dict]:
        resp = self._send("POST", self._path(path), body=json.dumps(payload).encode(),
                          headers=self._headers(idempotency_key, json_body=True))
        return resp.status, self._json(resp)

    def get(self, path: str, params: dict | None = None) -> tuple[int, dict]:
        resp = self._send("GET", self._path(path), params=params, headers=self._headers())
        if resp.status in (401, 403, 429):
            raise ChannelUnavailable(f"{self.channel_id}: channel answered HTTP {resp.status}")
        return resp.status, self._json(resp)

    def get_text(self, path: str, params: dict | None = None) -> str:
        resp = self._send("GET", path, params=params, headers=self._headers())
        if resp.status != 200:
            raise ChannelUnavailable(f"{self.channel_id}: {path} answered HTTP {resp.status}")
        try:
            return resp.data.decode("utf-8")
        except UnicodeDecodeError:
            raise ChannelUnavailable(f"{self.channel_id}: {path} is not UTF-8 text") from None

    def _path(self, path: str) -> str:
        return f"/v1/channels/{quote(self.channel_id, safe='')}{path}"

    def _json(self, resp: Response) -> dict[str, Any]:
        try:
            data = json.loads(resp.data)
        except ValueError:
            if resp.ok:
                raise ChannelTimeout(f"{self.channel_id}: answer is not JSON (outcome unknown)") from None
            return {}
        return data if isinstance(data, dict) else {"data": data}
