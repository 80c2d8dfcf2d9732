"""Merchant channel accounts (contract §4): a merchant's own credentials for a channel.

``POST /v1/channel_accounts {channel, credentials}`` stores them encrypted (app.adapters.crypto)
and never shows them again: not in the answer, a list, a replay of the request's Idempotency-Key
(the stored answer never had them), a log line or an error message (their schema is
``writeOnly``). From then on that merchant's operations in that mode on that channel are made
with them (``for_candidates``); without one, with the platform's. At most one live account per
merchant, mode and channel (409 ``channel_account_exists``; delete it and create another to
change credentials). Deleting one stops new operations using it; the operations it already
carries keep it for their status queries, capture, cancel, refunds and reconciliation.

Before anything is stored the credentials are checked with the PSP, when the channel's adapter
can (``Channel.verify_credentials``, one cheap authenticated call, made with no transaction
open): refused → 422 ``channel_credentials_refused``; the PSP unreachable or unsure → 502
(``channel_unavailable`` / ``channel_timeout``; the Idempotency-Key is released, retry it). An
adapter that cannot check them has them stored unchecked (``verified: false``). A credential
that holds a character no request can carry as it is (a control character, CR, LF or NUL among
them, or one beyond U+00FF) is 400 ``parameter_invalid`` before anything is asked or stored: it
could never be sent, and the PSP's answer would be read as the channel down. So is one that begins
or ends with whitespace (a space, U+00A0): a header value is trimmed on the way, so the PSP would
read the credential without it while the digest below covers it (another merchant's key plus a
space would pass as other credentials); refused, never trimmed in silence. The same
credentials at one PSP are one merchant's: another live account holding them on the channel, or
another merchant's on any channel of the same PSP (the same ``config.base_url`` origin: a PSP key
belongs to one merchant account there, whichever channel definition points at it, docs/design.md),
is 409 ``channel_credentials_in_use``, found by a keyed digest (HMAC under the encryption key,
``credentials_digest``), never by the plaintext. The same merchant may bring its key on several
channels of its PSP: it is the same account.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from datetime import date, datetime, timedelta

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session

from app import context
from app.adapters import account_channels, cached, crypto
from app.adapters.channel_answers import AdapterFault
from app.adapters.db import after_commit, insert_unique_row, serialize
from app.adapters.models import ChannelAccount, Operation, new_id, utcnow
from app.config import Config, get_config
from app.domain.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from app.services.channel_import_checks import origin
from app.services.listing import ListQuery, Page, page
from app.services.representation import rfc3339
from channels.base import ChannelError, CredentialsRefused, OperationNotSupported

log = logging.getLogger("payrouter.channels")
MODES = {False: "test", True: "live"}


def representation(account: ChannelAccount) -> dict:
    return {"id": account.id, "object": "channel_account", "livemode": account.livemode,
            "created_at": rfc3339(account.created_at), "channel": account.channel,
            "credential_fields": list(account.credential_fields), "verified": bool(account.verified),
            "metadata": account.metadata_ or {}}


def idempotency_body(body: dict) -> dict:
    """What a create's Idempotency-Key is bound to: the body with its credentials replaced by a
    keyed digest (HMAC under the encryption key), so the stored request hash is no unsalted hash
    of a credential, and the same credentials still make the same request."""
    canonical = json.dumps(body.get("credentials"), sort_keys=True, separators=(",", ":")).encode()
    key = hashlib.sha256(b"payrouter channel account credentials v1:" + crypto.current_key(get_config()).encode())
    digest = hmac.new(key.digest(), canonical, hashlib.sha256).hexdigest()
    return {**body, "credentials": digest}


def credentials_digest(credentials: dict, config: Config | None = None) -> str:
    """What two accounts holding the same credentials share (``channel_accounts.credentials_digest``,
    unique per channel among live accounts): an HMAC-SHA256 of their canonical JSON under a key
    derived from the encryption key (so the table holds no unsalted hash of a credential);
    recomputed by ``payrouter secrets rotate`` under the new key."""
    canonical = json.dumps(credentials, sort_keys=True, separators=(",", ":")).encode()
    key = hashlib.sha256(b"payrouter channel account credentials digest v1:"
                         + crypto.current_key(config or get_config()).encode())
    return hmac.new(key.digest(), canonical, hashlib.sha256).hexdigest()


# What a credential may hold: printable Latin-1, the characters an HTTP header carries as they are (CR,
# LF or NUL would end or cut the header, the request is then refused before sending; other controls
# and characters beyond U+00FF are refused by servers or changed on the way). A credential is a key
# or a secret, never text to show: anything else cannot be one.
_UNSENDABLE = re.compile(r"[^\x20-\x7e\xa0-\xff]")


def create(session: Session, merchant_id: str, livemode: bool, body: dict) -> ChannelAccount:
    adapter = _channel_of_mode(body["channel"], livemode)
    credentials = body["credentials"]
    wanted = set(adapter.credential_fields)
    if not wanted:
        raise InvalidRequest(f"channel {adapter.id} takes no merchant credentials", param="channel",
                             code="channel_accounts_unsupported")
    for name in sorted(set(credentials) - wanted):
        raise InvalidRequest(f"Received unknown parameter: credentials[{name}]", param=f"credentials[{name}]",
                             code="parameter_unknown")
    for name in sorted(wanted - set(credentials)):
        raise InvalidRequest(f"Missing required param: credentials[{name}]", param=f"credentials[{name}]",
                             code="parameter_missing")
    for name in sorted(credentials):
        if _UNSENDABLE.search(credentials[name]):
            raise InvalidRequest(f"credentials[{name}]: holds a character no request to the channel can carry as it "
                                 "is (a control character such as CR, LF, NUL or tab, or one beyond U+00FF); the "
                                 "value is not quoted", param=f"credentials[{name}]", code="parameter_invalid")
        if credentials[name] != credentials[name].strip():
            raise InvalidRequest(f"credentials[{name}]: begins or ends with whitespace, which a request to the channel "
                                 "does not carry (a header value is trimmed), so the PSP would read another "
                                 "credential; send it without; the value is not quoted",
                                 param=f"credentials[{name}]", code="parameter_invalid")
    digest = credentials_digest(credentials)
    _refuse_taken(session, merchant_id, livemode, adapter, digest)
    session.commit()  # the Idempotency-Key's claim: a retry waits for this request while the PSP is asked
    verified = _verify(adapter, credentials)
    # Checked again under the digest's lock (held to the commit): two merchants bringing one key on
    # two channels of the same PSP at once take turns, and the second sees the first's account.
    serialize(session, f"channel_credentials:{digest}")
    _refuse_taken(session, merchant_id, livemode, adapter, digest)
    account = ChannelAccount(id=new_id("mca"), merchant_id=merchant_id, livemode=livemode, channel=adapter.id,
                             credentials_encrypted=account_channels.seal(credentials), credentials_digest=digest,
                             verified=verified, credential_fields=sorted(credentials),
                             metadata_=body.get("metadata") or {}, request_id=context.current_request_id(),
                             created_at=utcnow())
    values = {column.key: getattr(account, attr.key) for attr in ChannelAccount.__mapper__.column_attrs
              for column in attr.columns}
    if not insert_unique_row(session, ChannelAccount.__table__, values):  # one created meanwhile
        _refuse_taken(session, merchant_id, livemode, adapter, digest)
        raise Conflict(f"channel {adapter.id} changed meanwhile; try again", code="state_conflict")
    after_commit(session, _announce, account.id)
    return account


def _refuse_taken(session: Session, merchant_id: str, livemode: bool, adapter, digest: str) -> None:
    """409 if the merchant already has a live account on the channel in this mode, or another live
    account holds these credentials on the channel, or another merchant's on a channel of the same
    PSP (whoever's: which is not said)."""
    channel_id = adapter.id
    live = (ChannelAccount.channel == channel_id, ChannelAccount.deleted_at.is_(None))
    if session.scalar(select(ChannelAccount.id).where(*live, ChannelAccount.merchant_id == merchant_id,
                                                      ChannelAccount.livemode == livemode)):
        raise Conflict(f"this merchant already has a {MODES[livemode]} account on channel {channel_id}; "
                       "delete it to bring other credentials", code="channel_account_exists")
    peers = same_psp(adapter)
    if session.scalar(select(ChannelAccount.id).where(
            ChannelAccount.deleted_at.is_(None), ChannelAccount.credentials_digest == digest,
            or_(ChannelAccount.channel == channel_id,
                and_(ChannelAccount.channel.in_(peers), ChannelAccount.merchant_id != merchant_id))).limit(1)):
        where = f"channel {channel_id}" + (f" or another channel of its PSP ({', '.join(peers)})" if peers else "")
        raise Conflict(f"these credentials are already brought by another account on {where}",
                       param="credentials", code="channel_credentials_in_use")


def same_psp(adapter) -> list[str]:
    """The other channels this process runs on the same PSP as ``adapter``: the same origin
    (scheme, host, port) of ``config.base_url``. A channel without one shares it with none."""
    from app.adapters.channels_runtime import registry

    mine = origin(adapter.spec.config.get("base_url"))
    if mine is None:
        return []
    channels = registry()
    return [cid for cid in channels.ids() if cid != adapter.id
            and origin(channels.get(cid).spec.config.get("base_url")) == mine]


def _verify(adapter, credentials: dict) -> bool:
    """Ask the PSP whether it takes the credentials (no transaction open: nothing of the session is
    read meanwhile). True: it does; False: the adapter cannot tell (stored unchecked). Refused →
    422; the PSP unreachable or unsure → its ChannelError (502, the key released: retry it)."""
    try:
        adapter.verify_credentials(dict(credentials))
    except OperationNotSupported:
        return False
    except CredentialsRefused:
        raise Unprocessable(f"channel {adapter.id} refused these credentials; nothing was stored",
                            param="credentials", code="channel_credentials_refused") from None
    except ChannelError as exc:
        raise ChannelError(f"channel {adapter.id} could not check these credentials ({exc.code}); nothing was "
                        "stored: retry with the same Idempotency-Key", code=exc.code) from None
    except Exception as exc:  # noqa: BLE001 - a plugin's bug: never a stored account nor a bare 500
        log.exception("adapter fault: channel %s raised %s in verify_credentials", adapter.id,
                      type(exc).__name__, extra={"channel": adapter.id})
        raise AdapterFault(f"channel {adapter.id}: the adapter raised {type(exc).__name__} checking credentials; "
                           "nothing was stored") from None
    return True


def _channel_of_mode(channel_id: str, livemode: bool):
    """The configured channel, if it carries operations of the key's mode (else no operation of
    this mode would ever use the account)."""
    from app.adapters.channels_runtime import registry

    channels = registry()
    if channel_id not in channels:
        raise InvalidRequest(f"no such channel {channel_id!r}", param="channel", code="channel_unknown")
    adapter = channels.get(channel_id)
    if adapter.spec.mode != MODES[livemode]:
        raise InvalidRequest(f"channel {channel_id} is a {adapter.spec.mode} channel; a {MODES[livemode]} key "
                             f"brings accounts for {MODES[livemode]} channels", param="channel",
                             code="channel_mode_mismatch")
    return adapter


def get(session: Session, merchant_id: str, livemode: bool, account_id: str) -> ChannelAccount:
    account = session.get(ChannelAccount, account_id)
    if (account is None or account.merchant_id != merchant_id or account.livemode != livemode
            or account.deleted_at is not None):
        raise NotFound(f"No such channel account: '{account_id}'", param="id")
    return account


def list_accounts(session: Session, merchant_id: str, livemode: bool, query: ListQuery) -> Page:
    return page(session, ChannelAccount, merchant_id=merchant_id, query=query,
                where=(ChannelAccount.livemode == livemode, ChannelAccount.deleted_at.is_(None)))


def delete(session: Session, merchant_id: str, livemode: bool, account_id: str) -> dict:
    account = get(session, merchant_id, livemode, account_id)
    account.deleted_at = utcnow()
    after_commit(session, _announce, account.id)
    return {"id": account.id, "object": "channel_account", "deleted": True}


def for_candidates(session: Session, op: Operation, candidates: list[str],
                   payment: Operation | None = None) -> dict[str, tuple[str, str | None]]:
    """The account each candidate channel would carry ``op`` with: ``{channel: (account id, sealed
    credentials or None)}``, a channel left out carrying it with the platform's credentials. A
    refund goes with its payment's account; anything else with the merchant's live account in
    its mode (one indexed read per operation, uq_channel_accounts_live)."""
    if op.kind == "refund":
        if payment is not None and payment.channel_account_id and payment.channel in candidates:
            return {payment.channel: (payment.channel_account_id, None)}
        return {}
    if not candidates:
        return {}
    live = _live_accounts(session, op.merchant_id, op.livemode)
    return {channel: (live[channel], None) for channel in candidates if channel in live}


# Every process's copy of the merchants' live accounts it has used: {(database, merchant, livemode):
# {channel: account id}}, filled per merchant on first use (one indexed read, uq_channel_accounts_live)
# and dropped whole on every change notice (a create or delete, once committed: topic
# "channel_accounts"), or every RELOAD_INTERVAL anyway; while this process is not subscribed it
# checks the version key at most every CHECK_INTERVAL (app.adapters.cached). Only ids are kept: an
# account's credentials are read once, when its channel instance is made (app.adapters.account_channels).
VERSION_KEY = "payrouter:channel_accounts:version"
_CACHED_MERCHANTS = 10_000  # beyond that, merchants are read per operation until the next notice or reload
_copy: cached.Copy[dict] = cached.Copy("channel_accounts", VERSION_KEY, dict)
_LIVE = (select(ChannelAccount.__table__.c.channel, ChannelAccount.__table__.c.id)
         .where(ChannelAccount.__table__.c.merchant_id == bindparam("merchant_id"),
                ChannelAccount.__table__.c.livemode == bindparam("livemode"),
                ChannelAccount.__table__.c.deleted_at.is_(None)))


def _live_accounts(session: Session, merchant_id: str, livemode: bool) -> dict[str, str]:
    """The merchant's live accounts in one mode, ``{channel: account id}``. A read that a notice
    overtakes is stored in the copy the notice has already replaced, so it is never used again."""
    known = _copy.get()  # a new dict after every change notice
    key = (str(session.get_bind().engine.url), merchant_id, livemode)
    found = known.get(key)
    if found is None:
        found = dict(session.connection().execute(_LIVE, {"merchant_id": merchant_id, "livemode": livemode}).all())
        if len(known) < _CACHED_MERCHANTS:
            known[key] = found
    return found


def _announce(_account_ids: list) -> None:
    """After the commit of a create or delete: this process forgets its copy at once, the others on
    the notice (or within CHECK_INTERVAL of the version key's change while not subscribed)."""
    _copy.announce()


RECONCILED_AFTER_DELETE = timedelta(days=8)  # past the reconciliation lookback of the operations it carried


def of_channel(session: Session, channel_id: str, day: date | None = None) -> list[str]:
    """The ids of the accounts on a channel whose statements reconciliation reads, oldest first:
    the live ones, and those deleted at most RECONCILED_AFTER_DELETE before the day reconciled
    (``day``, UTC; None: now, a near-real-time pass): what they carried may still settle on it. A
    re-run of an old day reads the accounts deleted since, whenever it runs."""
    since = (datetime.combine(day, datetime.min.time()) if day is not None else utcnow()) - RECONCILED_AFTER_DELETE
    return list(session.scalars(select(ChannelAccount.id).where(
        ChannelAccount.channel == channel_id,
        or_(ChannelAccount.deleted_at.is_(None), ChannelAccount.deleted_at >= since))
        .order_by(ChannelAccount.created_at, ChannelAccount.id)))
