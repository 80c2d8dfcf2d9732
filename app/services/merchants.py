"""Merchants and their secret API keys (only a SHA-256 hash of a key is stored)."""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.adapters import notify
from app.adapters.db import read_only
from app.adapters.models import ApiKey, Merchant, new_id, utcnow
from app.domain.errors import AuthenticationFailed, NotFound

log = logging.getLogger("payrouter.merchants")

# Authentication results are cached per process for AUTH_CACHE_SECONDS, counted from before the
# database was read, so a key revoked in any process is refused by every process within that time
# whatever Redis does (contract: 100 ms). A revocation is also announced once committed (app.adapters.notify,
# topic "api_keys"), and every listening process drops its cache on the notice, within milliseconds.
AUTH_CACHE_SECONDS = 0.05
_auth_cache: dict[str, tuple[float, Merchant, ApiKey]] = {}
_auth_lock = threading.Lock()
_auth_generation = [0]  # bumped by every notice: a read that a notice overtook is not cached


def _forget_keys() -> None:
    with _auth_lock:
        _auth_generation[0] += 1
        _auth_cache.clear()


notify.on_change("api_keys", _forget_keys)


def reset_cache() -> None:
    """Forget every cached authentication (as a revocation notice does): for tests that empty the database."""
    _forget_keys()


@dataclass(frozen=True)
class MerchantScope:
    """A merchant as one API key sees it (contract §1, modes): what a service needs of the
    merchant, and the key's mode. A live key sees and makes only live objects, a test key only
    test ones, and routes only to channels of its mode."""

    id: str
    name: str
    category: str | None
    livemode: bool

    @classmethod
    def of(cls, merchant: Merchant, key: ApiKey) -> "MerchantScope":
        return cls(merchant.id, merchant.name, merchant.category, key.mode == "live")


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
    _forget_keys()
    event.listen(session, "after_commit", _announce_revocation, once=True)
    return key


def _announce_revocation(_session: Session) -> None:
    """Once the revocation is committed: this process forgets its keys, and tells every other one."""
    _forget_keys()
    try:
        notify.announce("api_keys")
    except Exception as exc:  # noqa: BLE001 - the others' caches run out within AUTH_CACHE_SECONDS anyway
        log.warning("key revocation not announced through Redis: %s", exc)


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
    generation = _auth_generation[0]
    notify.healthy()  # starts this process's listener, so revocations elsewhere reach the cache
    with read_only() as session:  # a read: no COMMIT round trip (the cache misses every 50 ms)
        row = session.execute(select(ApiKey, Merchant).join(Merchant, Merchant.id == ApiKey.merchant_id)
                              .where(ApiKey.key_hash == digest)).first()
        session.expunge_all()  # loaded as they are: the read-only session's rollback would expire them
    if row is None or not hmac.compare_digest(row[0].key_hash, digest) or row[0].revoked_at is not None:
        raise AuthenticationFailed("Invalid API key provided.")
    key, merchant = row
    with _auth_lock:
        if len(_auth_cache) > 10_000:
            _auth_cache.clear()
        if generation == _auth_generation[0]:
            _auth_cache[digest] = (now + AUTH_CACHE_SECONDS, merchant, key)
    return merchant, key
