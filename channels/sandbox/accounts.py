"""The sandbox's merchant accounts (contract §4): ``POST /accounts`` → ``{id, api_key}``.

A merchant brings its own account at a PSP; the sandbox stands for that PSP. A request made with
an account's key (``Authorization: Bearer <api_key>``, on every channel this sandbox serves) acts
for that account alone: its charges, refunds and payouts are its own, another account's operations
are unknown to it (404), and its statement lists only its operations. The channel's secret acts
for the platform's account, as before. Any other key is refused (401 ``authentication_failed``).

A key outlives the sandbox's process: the router keeps it (a merchant channel account's credentials)
while the sandbox's operations live in memory. So nothing is kept: a key is the account's id and an
HMAC-SHA256 of it under the sandbox's accounts secret (``sbxkey_<account hex>_<mac>``), checked by
computing it again. ``payrouter sandbox`` takes that secret from the router's database (generated
once, stored encrypted like a test channel's: app.adapters.channel_secrets), so a restarted sandbox
accepts the keys it issued before; a sandbox given none (tests, a sandbox without a database) draws
one at random, and its keys last as long as its process.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from typing import Callable

KEY_PREFIX, ACCOUNT_PREFIX = "sbxkey_", "sbxacct_"
# The name the accounts secret is stored under beside the channels' own (channel ids have no colon).
SECRET_NAME = "sandbox:accounts"
_KEY = re.compile(r"sbxkey_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")


class Accounts:
    """The accounts this sandbox opens, and whose keys it accepts: those made under ``secret``
    (read once, on first use, so a sandbox whose accounts are never used needs no database)."""

    def __init__(self, secret: Callable[[], str] | None = None):
        self._secret_of = secret or (lambda: secrets.token_urlsafe(32))
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    def open(self) -> dict:
        """A new account and its key (the only time the key is shown)."""
        account_hex = secrets.token_hex(8)
        return {"id": ACCOUNT_PREFIX + account_hex, "object": "account", "api_key": self._key(account_hex)}

    def holder(self, key: str) -> str | None:
        """The account whose key this is, or None (a key this sandbox, under its secret, did not issue)."""
        found = _KEY.fullmatch(key)
        if found is None or not hmac.compare_digest(self._key(found.group(1)).encode(), key.encode()):
            return None
        return ACCOUNT_PREFIX + found.group(1)

    def _key(self, account_hex: str) -> str:
        mac = hmac.new(self._mac_key(), b"sandbox account key:" + account_hex.encode(), hashlib.sha256).digest()
        return f"{KEY_PREFIX}{account_hex}_{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def _mac_key(self) -> bytes:
        with self._lock:
            if self._secret is None:
                self._secret = self._secret_of().encode()
            return self._secret
