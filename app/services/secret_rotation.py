"""``payrouter secrets rotate``: every secret stored encrypted re-encrypted under the current
PAYROUTER_SECRET_KEY (app.adapters.crypto), in one transaction: all of them or none; the keyed
digests of channel accounts' credentials (app.services.channel_accounts) are keyed anew with it.

Rotating the key without downtime: (1) every process gets the new PAYROUTER_SECRET_KEY and the
old one as PAYROUTER_PREVIOUS_SECRET_KEY (both decrypt, the new one encrypts); (2) ``payrouter
secrets rotate``; (3) PAYROUTER_PREVIOUS_SECRET_KEY is removed. Old keys may also be given to the
command alone (``--old-key-env NAME``, ``--old-key-file PATH``) when the processes are stopped.
"""
from __future__ import annotations

import json

from sqlalchemy import or_, select

from app.adapters import crypto
from app.adapters.db import unit_of_work
from app.adapters.models import ChannelAccount, ChannelSecret, IdempotencyKey
from app.adapters.webhook_models import WebhookEndpoint
from app.config import Config, get_config
from app.services.channel_accounts import credentials_digest
from app.services.merchants import KEY_CREATE_PATH, KEY_ROLL_PATH
from app.services.webhooks.endpoints import CREATE_PATH, ROTATE_PATH


def rotate(old_keys: tuple[str, ...] = (), config: Config | None = None) -> dict:
    """Re-encrypt every stored secret under the current key; counts per kind. Raises
    SecretUndecryptable (nothing changed) if one opens under none of the keys."""
    config = config or get_config()
    ring = crypto.keyring(config, old_keys)
    counts = {"channel_secrets": 0, "channel_account_credentials": 0, "webhook_endpoint_secrets": 0,
              "stored_responses": 0}
    with unit_of_work(config) as session:
        for row in session.scalars(select(ChannelSecret).with_for_update()):
            row.secret_encrypted = crypto.reencrypt(row.secret_encrypted, ring)
            counts["channel_secrets"] += 1
        for account in session.scalars(select(ChannelAccount).with_for_update()):
            account.credentials_encrypted = crypto.reencrypt(account.credentials_encrypted, ring)
            if account.credentials_digest is not None:  # keyed by the encryption key: keyed anew
                account.credentials_digest = credentials_digest(
                    json.loads(crypto.decrypt(account.credentials_encrypted, config)), config)
            counts["channel_account_credentials"] += 1
        for endpoint in session.scalars(select(WebhookEndpoint).where(or_(
                WebhookEndpoint.secret_encrypted.is_not(None),
                WebhookEndpoint.previous_secret_encrypted.is_not(None))).with_for_update()):
            for column in ("secret_encrypted", "previous_secret_encrypted"):
                if getattr(endpoint, column):
                    setattr(endpoint, column, crypto.reencrypt(getattr(endpoint, column), ring))
                    counts["webhook_endpoint_secrets"] += 1
        shows_a_secret = or_(  # the answers stored with a sealed secret (crypto.seal_secret), for replay
            IdempotencyKey.endpoint.in_((CREATE_PATH, KEY_CREATE_PATH)),
            IdempotencyKey.endpoint.like(ROTATE_PATH.format("%")),
            IdempotencyKey.endpoint.like(KEY_ROLL_PATH.format("%")))
        for row in session.scalars(select(IdempotencyKey).where(
                shows_a_secret, IdempotencyKey.status == "done", IdempotencyKey.response_status < 300)
                .with_for_update()):
            body = json.loads(row.response_body)
            if body.get("secret"):  # sealed (app.adapters.crypto.seal_secret)
                body["secret"] = crypto.reencrypt(body["secret"], ring)
                row.response_body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
                counts["stored_responses"] += 1
    return counts
