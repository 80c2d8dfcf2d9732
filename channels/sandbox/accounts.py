"""The sandbox's merchant accounts (contract §4): ``POST /accounts`` → ``{id, api_key}``.

A merchant brings its own account at a PSP; the sandbox stands for that PSP. A request made with
an account's key (``Authorization: Bearer <api_key>``, on every channel this sandbox serves) acts
for that account alone: its charges, refunds and payouts are its own, another account's operations
are unknown to it (404), and its statement lists only its operations. The channel's secret acts
for the platform's account, as before. Any other key is refused (401 ``authentication_failed``).
Keys are kept as SHA-256 digests, in memory, like the rest of the sandbox's state.
"""
from __future__ import annotations

import hashlib
import secrets
import threading

KEY_PREFIX = "sbxkey_"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class Accounts:
    """The accounts this sandbox opened, by the digest of their key."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holders: dict[bytes, str] = {}

    def open(self) -> dict:
        """A new account and its key (the only time the key is shown)."""
        account_id, key = "sbxacct_" + secrets.token_hex(8), KEY_PREFIX + secrets.token_urlsafe(24)
        with self._lock:
            self._holders[_digest(key)] = account_id
        return {"id": account_id, "object": "account", "api_key": key}

    def holder(self, key: str) -> str | None:
        """The account whose key this is, or None (a key this sandbox did not issue)."""
        with self._lock:
            return self._holders.get(_digest(key))
