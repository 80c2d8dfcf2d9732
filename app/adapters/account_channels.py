"""Channel instances acting for merchants' own channel accounts (contract §4): one per account,
made on first use from its decrypted credentials (``Channel.with_credentials``) and kept beside
the channel instance it derives from (a channel reloaded is a new instance, and its accounts'
are made again). An account's credentials never change (new credentials are a new account), so
an instance kept is never stale."""
from __future__ import annotations

import json
import threading
import weakref

from sqlalchemy import select

from app.adapters import crypto
from app.adapters.channels_runtime import channel
from app.adapters.db import read_only
from app.adapters.models import ChannelAccount
from channels.base import Channel

_lock = threading.Lock()
_made: "weakref.WeakKeyDictionary[Channel, dict[str, Channel]]" = weakref.WeakKeyDictionary()


def seal(credentials: dict[str, str]) -> str:
    """Credentials as stored: one encrypted JSON object."""
    return crypto.encrypt(json.dumps(credentials, sort_keys=True, separators=(",", ":")))


def adapter(channel_id: str, account_id: str | None = None, sealed: str | None = None) -> Channel:
    """The channel (``account_id`` None: with the platform's credentials), or the channel acting for
    the account ``account_id``, whose ``sealed`` credentials are read here when not given."""
    base = channel(channel_id)
    if account_id is None:
        return base
    with _lock:
        found = _made.setdefault(base, {}).get(account_id)
    if found is None:
        if sealed is None:
            with read_only() as session:
                sealed = session.scalar(select(ChannelAccount.credentials_encrypted)
                                        .where(ChannelAccount.id == account_id))
        found = base.with_credentials(json.loads(crypto.decrypt(sealed)))
        with _lock:
            found = _made.setdefault(base, {}).setdefault(account_id, found)
    return found
