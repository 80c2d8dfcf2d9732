"""Merchants and their secret API keys (only a SHA-256 hash of a key is stored)."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import unit_of_work
from app.domain.errors import AuthenticationFailed, NotFound
from app.models import ApiKey, Merchant, new_id, utcnow

# Authentication results are cached per process for AUTH_CACHE_SECONDS: a revoked key stops
# working in this process at once and in every other process within that many seconds.
AUTH_CACHE_SECONDS = 2.0
_auth_cache: dict[str, tuple[float, Merchant, ApiKey]] = {}
_auth_lock = threading.Lock()


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # shown once, never stored


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_merchant(session: Session, name: str, category: str | None = None, mode: str = "test"):
    merchant = Merchant(id=new_id("mer"), name=name, category=category)
    session.add(merchant)
    session.flush()
    return merchant, issue_key(session, merchant.id, mode)


def issue_key(session: Session, merchant_id: str, mode: str = "test") -> IssuedKey:
    if mode not in ("test", "live"):
        raise ValueError("mode is test or live")
    secret = f"sk_{mode}_" + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), merchant_id=merchant_id, mode=mode, prefix=secret[:12], key_hash=hash_key(secret))
    session.add(key)
    session.flush()
    return IssuedKey(key=key, secret=secret)


def revoke_key(session: Session, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no such key {key_id}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    with _auth_lock:
        _auth_cache.pop(key.key_hash, None)
    return key


def authenticate(secret: str | None) -> tuple[Merchant, ApiKey]:
    """The merchant a secret key belongs to; constant-time comparison of the hashes. A key seen
    within AUTH_CACHE_SECONDS costs no database work (not even a session)."""
    if not secret or not (secret.startswith("sk_test_") or secret.startswith("sk_live_")):
        raise AuthenticationFailed("Invalid API key provided.")
    digest = hash_key(secret)
    now = time.monotonic()
    cached = _auth_cache.get(digest)
    if cached and cached[0] > now and hmac.compare_digest(cached[2].key_hash, digest):
        return cached[1], cached[2]
    with unit_of_work() as session:
        row = session.execute(select(ApiKey, Merchant).join(Merchant, Merchant.id == ApiKey.merchant_id)
                              .where(ApiKey.key_hash == digest)).first()
    if row is None or not hmac.compare_digest(row[0].key_hash, digest) or row[0].revoked_at is not None:
        raise AuthenticationFailed("Invalid API key provided.")
    key, merchant = row
    with _auth_lock:
        if len(_auth_cache) > 10_000:
            _auth_cache.clear()
        _auth_cache[digest] = (now + AUTH_CACHE_SECONDS, merchant, key)
    return merchant, key
