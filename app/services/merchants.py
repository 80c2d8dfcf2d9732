"""Merchants and their secret API keys (only a SHA-256 hash of a key is stored)."""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import bindparam, event, or_, select, update
from sqlalchemy.orm import Session

from app.adapters import crypto, notify
from app.adapters.db import read_only, unit_of_work
from app.adapters.models import ApiKey, Merchant, new_id, utcnow
from app.domain.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound
from app.services.listing import ListQuery, Page, page
from app.services.representation import rfc3339

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


def issue_key(session: Session, merchant_id: str, mode: str = "test", expires_at: datetime | None = None) -> IssuedKey:
    if mode not in ("test", "live"):
        raise ValueError("mode is test or live")
    secret = f"sk_{mode}_" + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), merchant_id=merchant_id, mode=mode, prefix=secret[:12], key_hash=hash_key(secret),
                 created_at=utcnow(), expires_at=expires_at)
    session.add(key)
    session.flush()
    return IssuedKey(key=key, secret=secret)


def revoke_key(session: Session, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no such key {key_id}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    _announce_on_commit(session)
    return key


def _announce_on_commit(session: Session) -> None:
    """A key's validity changed (revoked, or given an earlier expiry): forget cached keys now and
    once the change is committed, and tell every other process then."""
    _forget_keys()
    event.listen(session, "after_commit", _announce_revocation, once=True)


# Keys the merchant manages (/v1/api_keys). A key manages the keys of its own mode: the other
# mode's keys answer 404, as every object of the other mode does (contract §1, modes).
MAX_OVERLAP_SECONDS = 7 * 24 * 3600
# The paths whose answers show a new key's secret once (stored sealed for replay; secret rotation).
KEY_CREATE_PATH = "/v1/api_keys"
KEY_ROLL_PATH = "/v1/api_keys/{}/roll"
LAST_USED_PRECISION = timedelta(seconds=60)  # last_used_at is written at most once a minute per key


def is_live(key: ApiKey, now: datetime | None = None) -> bool:
    """Neither revoked nor expired: the key authenticates."""
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > (now or utcnow()))


def key_representation(key: ApiKey, secret: str | None = None) -> dict:
    out = {
        "id": key.id,
        "object": "api_key",
        "livemode": key.mode == "live",
        "prefix": key.prefix,
        "created_at": rfc3339(key.created_at),
        "last_used_at": rfc3339(key.last_used_at),
        "expires_at": rfc3339(key.expires_at),
        "revoked_at": rfc3339(key.revoked_at),
        "status": "active" if is_live(key) else "revoked" if key.revoked_at else "expired",
    }
    if secret is not None:
        out["secret"] = secret
    return out


def get_key(session: Session, merchant: MerchantScope, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.merchant_id != merchant.id or (key.mode == "live") != merchant.livemode:
        raise NotFound(f"No such api_key: '{key_id}'", param="id")
    return key


def list_keys(session: Session, merchant: MerchantScope, query: ListQuery) -> Page:
    return page(session, ApiKey, merchant_id=merchant.id, query=query,
                where=(ApiKey.mode == ("live" if merchant.livemode else "test"),))


def _mode(merchant: MerchantScope) -> str:
    return "live" if merchant.livemode else "test"


def create_key(session: Session, merchant: MerchantScope, expires_at: int | None = None) -> IssuedKey:
    """A new secret key of the caller's mode; ``expires_at``: Unix seconds, in the future."""
    expiry = None
    if expires_at is not None:
        expiry = datetime.fromtimestamp(expires_at, timezone.utc).replace(tzinfo=None)
        if expiry <= utcnow():
            raise InvalidRequest("expires_at must be in the future", param="expires_at", code="parameter_invalid")
    return issue_key(session, merchant.id, _mode(merchant), expiry)


def _lock_keys(session: Session, merchant_id: str) -> None:
    """Serialise changes to a merchant's keys (the merchant's row, FOR UPDATE on PostgreSQL;
    SQLite serialises writers anyway): two concurrent revocations cannot each see the other's
    key as the one that stays live."""
    session.execute(select(Merchant.id).where(Merchant.id == merchant_id).with_for_update())


def _refuse_last(session: Session, merchant: MerchantScope, key: ApiKey, action: str) -> None:
    now = utcnow()
    others = [k for k in session.scalars(select(ApiKey).where(
        ApiKey.merchant_id == merchant.id, ApiKey.mode == key.mode, ApiKey.id != key.id, ApiKey.revoked_at.is_(None)))
        if is_live(k, now)]
    if is_live(key, now) and not others:
        raise Conflict(f"{key.id} is the last active {key.mode}-mode key of this merchant: {action} would lock "
                       f"the merchant out of {key.mode} mode. Create a new key first (POST /v1/api_keys) or roll "
                       "this one.",
                       code="last_api_key", param="id")


def revoke_merchant_key(session: Session, merchant: MerchantScope, key_id: str) -> ApiKey:
    """Revoke one of the merchant's keys, refused (409) if it is the last live key of its mode.
    Every process refuses it at once (the authentication cache and the change notice)."""
    _lock_keys(session, merchant.id)
    key = get_key(session, merchant, key_id)
    if key.revoked_at is None:
        _refuse_last(session, merchant, key, "revoking it")
    return revoke_key(session, key.id)


def roll_key(session: Session, merchant: MerchantScope, key_id: str, overlap_seconds: int = 0) -> IssuedKey:
    """A new key replacing ``key_id``, which stays valid ``overlap_seconds`` more (0: revoked now)."""
    _lock_keys(session, merchant.id)
    key = get_key(session, merchant, key_id)
    if not is_live(key):
        raise Conflict(f"{key.id} is already revoked or expired; create a new key instead", code="api_key_inactive",
                       param="id")
    issued = issue_key(session, merchant.id, key.mode)
    if overlap_seconds <= 0:
        revoke_key(session, key.id)
    else:
        ends = utcnow() + timedelta(seconds=overlap_seconds)
        key.expires_at = min(key.expires_at, ends) if key.expires_at else ends
        _announce_on_commit(session)
    return issued


def unseal_secret(session: Session, merchant: MerchantScope, payload: dict) -> dict:
    """A stored response as replayed: the key's secret decrypted while the key is live, left out after."""
    def live(key_id: str | None) -> bool:
        key = session.get(ApiKey, key_id)
        return key is not None and key.merchant_id == merchant.id and is_live(key)

    return crypto.unseal_secret(payload, live)


def _touch(key: ApiKey) -> None:
    """Note that ``key`` was used, at most once per LAST_USED_PRECISION (a conditional UPDATE, so
    several processes write it once); never fails a request."""
    now = utcnow()
    if key.last_used_at is not None and key.last_used_at > now - LAST_USED_PRECISION:
        return
    try:
        with unit_of_work() as session:
            session.execute(update(ApiKey).where(ApiKey.id == key.id, or_(
                ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - LAST_USED_PRECISION))
                .values(last_used_at=now))
        key.last_used_at = now
    except Exception as exc:  # noqa: BLE001 - a statistic: the request goes on without it
        log.warning("could not record the use of key %s: %s", key.id, exc)


def _announce_revocation(_session: Session) -> None:
    """Once the revocation is committed: this process forgets its keys, and tells every other one."""
    _forget_keys()
    try:
        notify.announce("api_keys")
    except Exception as exc:  # noqa: BLE001 - the others' caches run out within AUTH_CACHE_SECONDS anyway
        log.warning("key revocation not announced through Redis: %s", exc)


# The key lookup, built once: a request that misses the cache only runs it.
_KEY_LOOKUP = (select(ApiKey, Merchant).join(Merchant, Merchant.id == ApiKey.merchant_id)
               .where(ApiKey.key_hash == bindparam("digest")))


def authenticate(secret: str | None) -> tuple[Merchant, ApiKey]:
    """The merchant a secret key belongs to; constant-time comparison of the hashes. A key seen
    within AUTH_CACHE_SECONDS costs no database work (not even a session)."""
    if not secret or not (secret.startswith("sk_test_") or secret.startswith("sk_live_")):
        raise AuthenticationFailed("Invalid API key provided.")
    digest = hash_key(secret)
    now = time.monotonic()
    cached = _auth_cache.get(digest)
    if cached and cached[0] > now and hmac.compare_digest(cached[2].key_hash, digest) and is_live(cached[2]):
        return cached[1], cached[2]
    generation = _auth_generation[0]
    notify.healthy()  # starts this process's listener, so revocations elsewhere reach the cache
    with read_only() as session:  # a read (the cache misses every 50 ms)
        row = session.execute(_KEY_LOOKUP, {"digest": digest}).first()
        session.expunge_all()  # loaded as they are, kept after the session closes
    if row is None or not hmac.compare_digest(row[0].key_hash, digest) or not is_live(row[0]):
        raise AuthenticationFailed("Invalid API key provided.")
    key, merchant = row
    _touch(key)
    with _auth_lock:
        if len(_auth_cache) > 10_000:
            _auth_cache.clear()
        if generation == _auth_generation[0]:
            _auth_cache[digest] = (now + AUTH_CACHE_SECONDS, merchant, key)
    return merchant, key
