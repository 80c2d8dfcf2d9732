"""Secrets at rest (contract §2, §4): webhook endpoint secrets and generated channel secrets are
stored encrypted, never in clear.

- Fernet (AES-CBC with HMAC-SHA256, from the ``cryptography`` package) under a key derived by
  HKDF-SHA256 from ``PAYROUTER_SECRET_KEY``: any length of secret gives a proper key, and the
  value that signs admin sessions is never itself the encryption key.
- ``PAYROUTER_SECRET_KEY`` unset: a random key kept in ``<var_dir>/secret_key`` (created 0600
  on first use), so nothing is encrypted under a value written in the source.
- Rotation: with ``PAYROUTER_PREVIOUS_SECRET_KEY`` set, values stored under the old key still
  decrypt while ``payrouter secrets rotate`` re-encrypts them under the current one.
"""
from __future__ import annotations

import base64
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Callable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.config import DEV_SECRET_KEY, Config, get_config
from app.domain.errors import PayRouterError

KEY_FILE = "secret_key"
_HKDF_INFO = b"payrouter secrets at rest v1"


class SecretUndecryptable(PayRouterError):
    """A stored secret decrypts under none of the configured keys (PAYROUTER_SECRET_KEY changed
    without ``payrouter secrets rotate``, or the value was altered)."""

    code = "secret_undecryptable"


def _fernet(key_material: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(key_material.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


@lru_cache(maxsize=8)
def key_file_secret(var_dir: Path) -> str:
    """The random key of an install without PAYROUTER_SECRET_KEY, created on first use. Written to a
    file of its own and then linked into place, so a process never reads a half-written key."""
    path = Path(var_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{KEY_FILE}.{secrets.token_hex(8)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process published its key first: everyone uses that one
        finally:
            os.unlink(draft)
    key = path.read_text().strip()
    if not key:
        raise SecretUndecryptable(f"{path} is empty: set PAYROUTER_SECRET_KEY or restore the file")
    return key


def current_key(config: Config) -> str:
    return config.secret_key if config.secret_key != DEV_SECRET_KEY else key_file_secret(Path(config.var_dir))


@lru_cache(maxsize=16)
def _keyring(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_fernet(k) for k in keys])


def keyring(config: Config | None = None, old_keys: tuple[str, ...] = ()) -> MultiFernet:
    """Encrypts under the current key; decrypts under it, the previous one, or ``old_keys``."""
    config = config or get_config()
    keys = [current_key(config)]
    for key in (config.previous_secret_key, *old_keys):
        if key and key not in keys:
            keys.append(key)
    return _keyring(tuple(keys))


def encrypt(plaintext: str, config: Config | None = None) -> str:
    return keyring(config).encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str, config: Config | None = None) -> str:
    try:
        return keyring(config).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as exc:
        raise SecretUndecryptable(
            "a stored secret cannot be decrypted with PAYROUTER_SECRET_KEY (or PAYROUTER_PREVIOUS_SECRET_KEY); "
            "was the key changed without `payrouter secrets rotate`?") from exc


def seal_secret(payload: dict) -> dict:
    """A response that shows a secret once, as stored for replay: its ``secret`` encrypted."""
    return {**payload, "secret": encrypt(payload["secret"])} if payload.get("secret") else payload


def unseal_secret(payload: dict, still_shown: Callable[[str | None], bool]) -> dict:
    """A sealed response as replayed: its ``secret`` decrypted while ``still_shown(payload["id"])``
    (its key or endpoint lives), left out after (key order kept: a replay is the original's bytes)."""
    sealed = payload.get("secret")
    if not sealed:
        return payload
    if not still_shown(payload.get("id")):
        return {k: v for k, v in payload.items() if k != "secret"}
    return {**payload, "secret": decrypt(sealed)}


def reencrypt(token: str, ring: MultiFernet) -> str:
    """``token`` under ``ring``'s first key (raises SecretUndecryptable if no key of it opens it)."""
    try:
        return ring.rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError) as exc:
        raise SecretUndecryptable("a stored secret decrypts under none of the given keys") from exc
