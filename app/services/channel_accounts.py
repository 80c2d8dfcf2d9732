"""Merchant channel accounts (contract §4): a merchant's own credentials for a channel.

``POST /v1/channel_accounts {channel, credentials}`` stores them encrypted (app.adapters.crypto)
and never shows them again: not in the answer, a list, a replay of the request's Idempotency-Key
(the stored answer never had them), a log line or an error message (their schema is
``writeOnly``). From then on that merchant's operations in that mode on that channel are made
with them (``for_candidates``); without one, with the platform's. At most one live account per
merchant, mode and channel (409 ``channel_account_exists``; delete it and create another to
change credentials). Deleting one stops new operations using it; the operations it already
carries keep it for their status queries, capture, cancel, refunds and reconciliation.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app import context
from app.adapters import account_channels, crypto
from app.adapters.db import insert_unique_row
from app.adapters.models import ChannelAccount, Operation, new_id, utcnow
from app.config import get_config
from app.domain.errors import Conflict, InvalidRequest, NotFound
from app.services.listing import ListQuery, Page, page
from app.services.representation import rfc3339

MODES = {False: "test", True: "live"}


def representation(account: ChannelAccount) -> dict:
    return {"id": account.id, "object": "channel_account", "livemode": account.livemode,
            "created_at": rfc3339(account.created_at), "channel": account.channel,
            "credential_fields": list(account.credential_fields), "metadata": account.metadata_ or {}}


def idempotency_body(body: dict) -> dict:
    """What a create's Idempotency-Key is bound to: the body with its credentials replaced by a
    keyed digest (HMAC under the encryption key), so the stored request hash is no unsalted hash
    of a credential, and the same credentials still make the same request."""
    canonical = json.dumps(body.get("credentials"), sort_keys=True, separators=(",", ":")).encode()
    key = hashlib.sha256(b"payrouter channel account credentials v1:" + crypto.current_key(get_config()).encode())
    digest = hmac.new(key.digest(), canonical, hashlib.sha256).hexdigest()
    return {**body, "credentials": digest}


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
    account = ChannelAccount(id=new_id("mca"), merchant_id=merchant_id, livemode=livemode, channel=adapter.id,
                             credentials_encrypted=account_channels.seal(credentials),
                             credential_fields=sorted(credentials), metadata_=body.get("metadata") or {},
                             request_id=context.current_request_id(), created_at=utcnow())
    values = {column.key: getattr(account, attr.key) for attr in ChannelAccount.__mapper__.column_attrs
              for column in attr.columns}
    if not insert_unique_row(session, ChannelAccount.__table__, values):
        raise Conflict(f"this merchant already has a {MODES[livemode]} account on channel {adapter.id}; "
                       "delete it to bring other credentials", code="channel_account_exists")
    return account


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
    rows = session.execute(select(ChannelAccount.channel, ChannelAccount.id, ChannelAccount.credentials_encrypted)
                           .where(ChannelAccount.merchant_id == op.merchant_id,
                                  ChannelAccount.livemode == op.livemode,
                                  ChannelAccount.channel.in_(candidates), ChannelAccount.deleted_at.is_(None)))
    return {channel: (account_id, sealed) for channel, account_id, sealed in rows}


RECONCILED_AFTER_DELETE = timedelta(days=8)  # past the reconciliation lookback of the operations it carried


def of_channel(session: Session, channel_id: str) -> list[str]:
    """The ids of the accounts on a channel whose statements reconciliation reads, oldest first:
    the live ones, and those deleted in the last RECONCILED_AFTER_DELETE (what they carried may
    still settle)."""
    return list(session.scalars(select(ChannelAccount.id).where(
        ChannelAccount.channel == channel_id,
        or_(ChannelAccount.deleted_at.is_(None), ChannelAccount.deleted_at >= utcnow() - RECONCILED_AFTER_DELETE))
        .order_by(ChannelAccount.created_at, ChannelAccount.id)))
