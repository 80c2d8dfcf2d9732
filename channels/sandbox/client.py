"""HTTP transport to the sandbox PSP, and the one place its transport faults are classified.

- connection refused / connect timeout / HTTP 5xx, 401, 403, 404, 429 on a POST → ChannelUnavailable
  (the request was not processed: safe to re-route);
- read timeout, or a connection dropped after a POST was sent → ChannelTimeout (outcome unknown);
- other 4xx answers are returned to the adapter, which maps them to a failed result.
"""
from __future__ import annotations

import threading
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from app import context
from channels.base import ChannelTimeout, ChannelUnavailable

UNAVAILABLE_STATUSES = {401, 403, 404, 429}


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the failure proves the request never reached the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    inner = exc.args[0] if exc.args else None
    return isinstance(inner, NewConnectionError) or isinstance(getattr(inner, "reason", None), NewConnectionError)


class SandboxClient:
    """One channel instance's HTTP client. ``timeout_ms`` bounds connect and read, each."""

    def __init__(self, base_url: str, channel_id: str, secret: str, timeout_ms: int):
        self.base_url = base_url.rstrip("/")
        self.channel_id = channel_id
        self.secret = secret
        self.timeout_s = timeout_ms / 1000
        self._local = threading.local()

    def _session(self) -> requests.Session:
        """One keep-alive session per thread (a requests.Session is not shared between threads):
        a payment does not pay for a new TCP connection to the channel."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _headers(self, idempotency_key: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self.secret}", "Accept": "application/json",
                   "X-Sandbox-Timeout-Ms": str(int(self.timeout_s * 1000))}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return context.outgoing_headers(headers)

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        url = self.base_url + path
        try:
            resp = self._session().request(method, url, timeout=(self.timeout_s, self.timeout_s), **kwargs)
        except requests.ReadTimeout as exc:
            raise ChannelTimeout(f"{self.channel_id}: no answer within {self.timeout_s:g}s ({method} {path})") from exc
        except requests.RequestException as exc:
            if _never_sent(exc) or method == "GET":
                raise ChannelUnavailable(f"{self.channel_id}: channel unreachable: {exc}") from exc
            raise ChannelTimeout(f"{self.channel_id}: connection lost after sending ({method} {path})") from exc
        if resp.status_code >= 500 or resp.status_code in UNAVAILABLE_STATUSES and method == "POST":
            raise ChannelUnavailable(f"{self.channel_id}: channel answered HTTP {resp.status_code}")
        return resp

    def post(self, path: str, payload: dict, idempotency_key: str) -> tuple[int, dict]:
        resp = self._send("POST", self._path(path), json=payload, headers=self._headers(idempotency_key))
        return resp.status_code, self._json(resp)

    def get(self, path: str, params: dict | None = None) -> tuple[int, dict]:
        resp = self._send("GET", self._path(path), params=params, headers=self._headers())
        if resp.status_code in (401, 403, 429):
            raise ChannelUnavailable(f"{self.channel_id}: channel answered HTTP {resp.status_code}")
        return resp.status_code, self._json(resp)

    def get_text(self, path: str, params: dict | None = None) -> str:
        resp = self._send("GET", path, params=params, headers=self._headers())
        if resp.status_code != 200:
            raise ChannelUnavailable(f"{self.channel_id}: {path} answered HTTP {resp.status_code}")
        return resp.text

    def _path(self, path: str) -> str:
        return f"/v1/channels/{self.channel_id}{path}"

    def _json(self, resp: requests.Response) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError:
            if resp.ok:
                raise ChannelTimeout(f"{self.channel_id}: answer is not JSON (outcome unknown)") from None
            return {}
        return data if isinstance(data, dict) else {"data": data}
