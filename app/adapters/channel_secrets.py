"""Generated secrets of test channels (contract §4: never derived from anything public).

A test channel whose ``secret_env`` is unset (and whose adapter takes a secret) runs on a random
secret that ``payrouter init`` (or ``channels import``) generates and stores encrypted
(``channel_secrets``, app.adapters.crypto). The router's registry and the sandbox (``payrouter
sandbox``, or in process in tests and the demo) both resolve it through ``StoredChannelSecrets``,
so they hold the same value. A process that finds none (init not run on
this database, or a channel added since) generates it the same way: the first insert wins and
everyone reads that row.
"""
from __future__ import annotations

import secrets

from sqlalchemy import select

from app.adapters import crypto
from app.adapters.db import insert_unique_row, read_only, unit_of_work
from app.adapters.models import ChannelSecret, utcnow
from app.config import Config, get_config
from channels.config import ChannelSpec, needs_generated_secret
from channels.registry import needs_secret

PREFIX = "chsec_"


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class StoredChannelSecrets:
    """``channels.config.StoredSecrets`` over the database: ``(spec) -> secret``, created if missing.

    The table is read on first use, not when made: a process whose channels all take their
    secrets from the environment (``payrouter sandbox`` with explicit secrets) never needs the
    database."""

    def __init__(self, config: Config | None = None):
        self.config = config or get_config()
        self._loaded: dict[str, str] | None = None

    @property
    def _stored(self) -> dict[str, str]:
        if self._loaded is None:
            with read_only(self.config) as session:
                self._loaded = dict(session.execute(
                    select(ChannelSecret.channel_id, ChannelSecret.secret_encrypted)).all())
        return self._loaded

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._stored

    def __call__(self, spec: ChannelSpec) -> str:
        return self.named(spec.id)

    def named(self, name: str) -> str:
        """The secret stored under ``name`` (a channel's id, or another secret of a test channel's
        server, such as the sandbox's accounts secret: channels.sandbox.accounts), created if missing."""
        token = self._stored.get(name)
        if token is None:
            token = self._stored[name] = _create(name, self.config)
        return crypto.decrypt(token, self.config)


def _create(channel_id: str, config: Config) -> str:
    """Insert a new secret unless another process did first; the stored one either way (encrypted)."""
    with unit_of_work(config) as session:
        insert_unique_row(session, ChannelSecret.__table__, {
            "channel_id": channel_id, "secret_encrypted": crypto.encrypt(new_secret(), config),
            "created_at": utcnow()})
        return session.scalar(select(ChannelSecret.secret_encrypted).where(ChannelSecret.channel_id == channel_id))


def ensure(config: Config | None = None, specs: list[ChannelSpec] | None = None) -> list[str]:
    """``payrouter init`` and ``channels import``: a generated secret for every test channel (of
    ``specs``, by default the stored channels) that has no ``secret_env`` value and no stored secret
    yet, unless its adapter takes none; the ids of the channels that got one."""
    config = config or get_config()
    if specs is None:
        from app.adapters import channel_definitions

        specs = channel_definitions.specs(channel_definitions.rows(config), config)
    store = StoredChannelSecrets(config)
    created = []
    for spec in specs:
        if needs_generated_secret(spec, config.channel_env) and needs_secret(spec) and spec.id not in store:
            store(spec)
            created.append(spec.id)
    return created
