"""Channel instances acting for merchants' own channel accounts (contract §4): one per account,
made on first use from its decrypted credentials (``Channel.with_credentials``) and kept beside
the channel instance it derives from (a channel reloaded is a new instance, and its accounts'
are made again). An account's credentials never change (new credentials are a new account), so
an instance kept is never stale.

Whatever ``with_credentials`` raises (a plugin's KeyError, a refusal of credentials it cannot
use) is ``AccountUnusable``: nothing was sent, so the call it was for failed without charging,
and the fault is the account's, never the channel's (app.services.operations neither counts it
against the channel's circuit nor leaves the operation waiting). Its message and log line name
the exception's type and where it was raised, never its text (it may quote a credential)."""
from __future__ import annotations

import json
import logging
import threading
import traceback
import weakref

from sqlalchemy import select

from app.adapters import crypto
from app.adapters.channels_runtime import channel
from app.adapters.db import read_only
from app.adapters.models import ChannelAccount
from channels.base import Channel, ChannelError

log = logging.getLogger("payrouter.channels")


class AccountUnusable(ChannelError):
    """A merchant's channel account could not make a request (its adapter's ``with_credentials``
    raised): nothing was sent."""

    code = "channel_account_unusable"

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
        credentials = json.loads(crypto.decrypt(sealed))
        try:
            found = base.with_credentials(credentials)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug or refusal: nothing sent, never a 500
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("adapter fault: channel %s raised %s in with_credentials for account %s (%s:%s in %s); "
                      "nothing was sent", channel_id, type(exc).__name__, account_id, where.filename, where.lineno,
                      where.name, extra={"channel": channel_id})
            raise AccountUnusable(f"channel {channel_id}: the adapter raised {type(exc).__name__} making the "
                                  f"merchant's account {account_id} ready; nothing was sent") from None
        with _lock:
            found = _made.setdefault(base, {}).setdefault(account_id, found)
    return found
