"""The sandbox PSP's requests (headers, paths, JSON) on the channel HTTP layer (channels.http),
which sends them and classifies faults. What the sandbox's answers mean:

- HTTP 5xx, and 401, 403, 404, 429 to a POST → ChannelUnavailable (the request was not
  processed: safe to re-route); 401, 403, 429 to a GET → ChannelUnavailable;
- but a POST made with a merchant account's key (``bearing``) that the sandbox refuses (401, 403)
  is answered to the adapter, which raises CredentialsRefused (the router: a decline
  ``channel_credentials_refused``): that merchant's credentials are wrong, not the channel down, so
  it neither fails over nor counts for the channel's circuit or success rate;
- ``whoami`` (checking a merchant account's key) is answered its 401 or 403: the key refused;
- a 2xx whose body is not JSON → ChannelTimeout (the outcome is unknown);
- other 4xx answers are returned to the adapter, which maps them to a failed result.
"""
from __future__ import annotations

import codecs
import copy
import json
from typing import Any, Iterator
from urllib.parse import quote

from app import context
from channels.base import ChannelError, ChannelTimeout, ChannelUnavailable
from channels.http import Answer, for_channel

REFUSED_POST = frozenset({401, 403, 404, 429})
REFUSED_GET = frozenset({401, 403, 429})
MAX_LINE = 64 * 1024  # characters in one statement line: far above any real line, and bounded


class SandboxClient:
    """One channel instance's client. ``timeout_ms`` bounds connect and read, each."""

    def __init__(self, base_url: str, channel_id: str, secret: str, timeout_ms: int, pool_size: int = 32,
                 config: dict | None = None):
        self.base_url = base_url.rstrip("/")
        self.channel_id = channel_id
        self.secret = secret
        self.timeout_s = timeout_ms / 1000
        self.http = for_channel(channel_id, self.base_url, timeout_ms, config, pool_size)
        self.refused_post = REFUSED_POST

    def bearing(self, key: str) -> "SandboxClient":
        """This client sending ``key`` (a merchant account's) instead of the channel's secret, on
        the same connections."""
        other = copy.copy(self)
        other.secret, other.refused_post = key, REFUSED_POST - {401, 403}
        return other

    def __repr__(self) -> str:  # never the key
        return f"<SandboxClient {self.channel_id}>"

    def _headers(self, idempotency_key: str | None = None, json_body: bool = False) -> dict:
        headers = {"Authorization": f"Bearer {self.secret}", "Accept": "application/json",
                   "X-Sandbox-Timeout-Ms": str(int(self.timeout_s * 1000))}
        if json_body:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return context.outgoing_headers(headers)

    def post(self, path: str, payload: dict, idempotency_key: str) -> tuple[int, dict]:
        answer = self.http.request("POST", self._path(path), body=json.dumps(payload).encode(),
                                   headers=self._headers(idempotency_key, json_body=True), refused=self.refused_post)
        return answer.status, self._json(answer)

    def get(self, path: str, params: dict | None = None, refused: frozenset = REFUSED_GET) -> tuple[int, dict]:
        answer = self.http.request("GET", self._path(path), params=params, headers=self._headers(),
                                   refused=refused)
        return answer.status, self._json(answer)

    def whoami(self) -> tuple[int, dict]:
        """``GET …/account`` with this client's key: 200 (whose key it is), or 401/403 (refused)."""
        return self.get("/account", refused=REFUSED_GET - {401, 403})

    def text_lines(self, path: str, params: dict | None = None) -> Iterator[str]:
        """A text document of any size (a statement), line by line as it streams in, each line with
        its ``\n`` (so a CSV reader keeps a newline inside a quoted field): only the piece being read
        is held. A body cut short raises the channel HTTP layer's fault; a line longer than
        MAX_LINE characters, or a body that is not UTF-8, is ChannelError ``statement_malformed``."""
        with self.http.stream("GET", path, params=params, headers=self._headers()) as answer:
            if answer.status != 200:
                raise ChannelUnavailable(f"{self.channel_id}: {path} answered HTTP {answer.status}")
            decoder, rest = codecs.getincrementaldecoder("utf-8")(), ""
            try:
                for chunk in answer.chunks():
                    *lines, rest = (rest + decoder.decode(chunk)).split("\n")
                    for line in lines:
                        yield line + "\n"
                    if len(rest) > MAX_LINE:  # checked per chunk: a body with no newline stays bounded
                        raise self._malformed(path, f"a line is longer than {MAX_LINE} characters")
                rest += decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise self._malformed(path, "it is not UTF-8 text") from None
            if rest:
                yield rest

    def _malformed(self, path: str, why: str) -> ChannelError:
        return ChannelError(f"{self.channel_id}: {path} cannot be read: {why}", code="statement_malformed")

    def _path(self, path: str) -> str:
        return f"/v1/channels/{quote(self.channel_id, safe='')}{path}"

    def _json(self, answer: Answer) -> dict[str, Any]:
        try:
            data = json.loads(answer.data)
        except ValueError:
            if answer.ok:
                raise ChannelTimeout(f"{self.channel_id}: answer is not JSON (outcome unknown)") from None
            return {}
        return data if isinstance(data, dict) else {"data": data}
