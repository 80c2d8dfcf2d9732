"""Authorize now, capture later: capture (all or part) or cancel a payment that waits.

A payment made with ``capture_method: manual`` stops at ``requires_capture`` when its channel
authorizes it; one whose customer must act (3-D Secure) waits at ``requires_action``. Capture and
cancel each ask the payment's channel first, with no transaction open (the request's Idempotency-Key
claim is committed before the call, as a create commits before its channel call), then apply the
channel's answer with the one compare-and-set (``operations.settle``) on the status and version
read before the call. The channel holds the authorization and decides between a capture and a void
racing each other: the loser is refused there, and here with 409. The channel's idempotency key is
``<payment>:<capture|void>:<version>``: a retry of the same request (after a timeout, or by a
request that took a dead one's claim over) is answered as the first was, never applied twice.

Postings (app.domain.postings): an authorization and a void move nothing; a capture posts the
payment's success of the captured amount, with the fee on that amount.
"""
from __future__ import annotations

import logging
from decimal import Decimal

from sqlalchemy.orm import Session

from app.adapters.account_channels import adapter as channel_for
from app.adapters.channel_answers import ask
from app.adapters.models import Merchant, Operation
from app.domain.errors import Conflict, NoRoute, Unprocessable
from app.domain.money import round_minor
from app.domain.states import CANCELED, REQUIRES_ACTION, REQUIRES_CAPTURE, SUCCEEDED
from app.services import routing
from app.services.operations import Made, attempts_of, next_query_at, settle
from app.services.payments import get_operation
from channels.base import CaptureRequest, ChannelResult, VoidRequest
from channels.config import UnknownChannel

log = logging.getLogger("payrouter.capture")

CANCELABLE = (REQUIRES_CAPTURE, REQUIRES_ACTION)


def capture_payment(session: Session, merchant, payment_id: str, body: dict) -> Made:
    """``POST /v1/payments/{id}/capture {amount?}``: 409 ``payment_not_capturable`` unless the
    payment is ``requires_capture``; 422 ``amount_too_large`` above what was authorized."""
    op = get_operation(session, merchant, "payment", payment_id)
    if op.status != REQUIRES_CAPTURE:
        raise Conflict(f"payment {op.id} is {op.status}; only a payment that requires_capture can be captured",
                       code="payment_not_capturable")
    amount = body.get("amount", op.amount)
    if amount > op.amount:
        raise Unprocessable(f"at most {op.amount} was authorized", param="amount", code="amount_too_large")
    result = _ask(session, op, "capture", lambda key: CaptureRequest(
        reference=op.id, channel_reference=op.channel_reference, amount=amount, currency=op.currency,
        idempotency_key=key))
    if result.status == SUCCEEDED:
        taken = result.amount_captured if result.amount_captured is not None else amount
        return _apply(session, op, SUCCEEDED, result, captured_changes(session, op, taken), "payment_not_capturable")
    raise _refused(session, op, result, "payment_not_capturable", "captured")


def cancel_payment(session: Session, merchant, payment_id: str, body: dict) -> Made:
    """``POST /v1/payments/{id}/cancel {reason?}``: voids an authorization or abandons a customer's
    step (→ ``canceled``); 409 ``payment_not_cancelable`` in any other status."""
    op = get_operation(session, merchant, "payment", payment_id)
    if op.status not in CANCELABLE:
        raise Conflict(f"payment {op.id} is {op.status}; only a payment that requires_capture or requires_action "
                       "can be canceled", code="payment_not_cancelable")
    result = _ask(session, op, "void", lambda key: VoidRequest(
        reference=op.id, channel_reference=op.channel_reference, idempotency_key=key))
    if result.status == CANCELED:
        return _apply(session, op, CANCELED, result, {"reason": body.get("reason") or "requested_by_customer"},
                      "payment_not_cancelable")
    raise _refused(session, op, result, "payment_not_cancelable", "canceled")


def captured_changes(session: Session, op: Operation, amount: int) -> dict:
    """The columns a capture of ``amount`` sets: the amount and its fee, as the rules compute a fee
    (a full capture keeps the fee quoted at authorization; a partial one is decided again on the
    captured amount under the live rules)."""
    if amount == op.amount:
        return {"amount_captured": amount}
    merchant = session.get(Merchant, op.merchant_id)
    scope = routing_scope(merchant, op.livemode)
    facts_body = {"payment_method": op.payment_method, "customer": op.customer, "metadata": op.metadata_,
                  "reference": op.reference}
    decision = routing.decide("payment", scope, facts_body, amount=amount, currency=op.currency,
                              split_key=op.idempotency_key or op.id, availability=routing.LedgerOnly())
    if decision.outcome == "route":
        fee = decision.fee
    else:  # the rules would refuse the amount today: the quoted fee, in proportion
        fee = round_minor(Decimal(op.fee) * amount / op.amount)
    return {"amount_captured": amount, "fee": min(fee, amount)}


def routing_scope(merchant: Merchant, livemode: bool):
    """What the rules read of a merchant (``routing.facts``), in the payment's mode."""
    from app.services.merchants import MerchantScope

    return MerchantScope(merchant.id, merchant.name, merchant.category, livemode)


def _ask(session: Session, op: Operation, verb: str, build) -> ChannelResult:
    """Call the channel (``verb``: capture or void, the request ``build(key)`` makes) with no
    transaction open: the request is built first, as nothing of the session may be read during the
    call (a read would open a transaction, on SQLite a writing one). Committed before: the
    Idempotency-Key's claim (so a retry waits for this request) and a status query due soon, so
    that a capture or void whose answer is lost (a timeout, this process dying) is learned from the
    channel. A fault raises: the request answers 502 and its key is released, to be retried as it was.
    A channel this process does not run (not built here, or removed) is a 402 ``no_route``, as for a
    refund, before anything is written or sent."""
    try:
        adapter = channel_for(op.channel, op.channel_account_id)
    except UnknownChannel:
        raise NoRoute(f"the payment's channel {op.channel} cannot {verb} now (unknown_channel)", decision={
            "outcome": "decline", "decline_code": "no_route", "channel": None, "candidates": [op.channel],
            "dropped": [{"channel": op.channel, "reason": "unknown_channel"}]}) from None
    request = build(f"{op.id}:{verb}:{op.version}")
    op.next_query_at = next_query_at(0)
    session.commit()
    return ask(adapter, verb, request)


def _apply(session: Session, op: Operation, status: str, result: ChannelResult, changes: dict, code: str) -> Made:
    """The channel's word applied by compare-and-set. A lost race (a status query or a callback
    applied the same word meanwhile) answers with the payment if it ended as the channel said."""
    attempts = attempts_of(session, op)
    if settle(session, op, status, attempts=attempts, changes=changes):
        return Made(op, attempts)
    if op.status == status:
        return Made(op, attempts_of(session, op))
    raise Conflict(f"payment {op.id} is {op.status}", code=code)


def _refused(session: Session, op: Operation, result: ChannelResult, code: str, verb: str) -> Conflict:
    """The channel refused (the authorization was captured, voided or expired meanwhile): 409, and
    the status query already due learns what the channel holds."""
    log.info("channel %s refused to have %s %s: %s", op.channel, op.id, verb, result.error_code)
    reason = result.error_message or result.error_code or "refused by the channel"
    return Conflict(f"payment {op.id} cannot be {verb}: {reason}", code=code)
