"""Disputes (chargebacks, ``dp_…``): what a payment's channel reports about one, applied once.

A channel reports a dispute with a signed callback (channels.base.DisputeNotice), stored in the
callback inbox and applied by the drain (app.services.callbacks) in the drain's transaction:

- reported (``needs_response``): the dispute is written (one per channel and channel reference:
  ``INSERT … ON CONFLICT DO NOTHING``, so a repeated report, even under another event id or by two
  workers at once, writes nothing more), the merchant's settlement is debited (posting rules,
  app.domain.postings.dispute_opened) and ``dispute.created`` is recorded;
- closed (``won`` or ``lost``): one compare-and-set on status and version from ``needs_response``;
  won reverses the debit (``dispute_reversal``), lost moves nothing more; ``dispute.closed`` is
  recorded. A close that arrives before its report opens the dispute first, then closes it.

The channel decides; a merchant reads disputes (``GET /v1/disputes``, ``/v1/disputes/{id}``).
"""
from __future__ import annotations

import logging

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app import context
from app.adapters.db import add_unique
from app.adapters.models import Dispute, Merchant, Operation, new_id, utcnow
from app.domain import disputes as rules
from app.domain import postings
from app.domain.errors import Conflict, NotFound
from app.domain.money import MAX_AMOUNT
from app.domain.states import OPEN, SUCCEEDED
from app.services import events, ledger
from app.services.listing import ListQuery, Page, page
from app.services.operations import entries_on
from app.services.representation import rfc3339

log = logging.getLogger("payrouter.disputes")

# A dispute callback's verdicts (app.services.callbacks): to be applied, set aside, or kept in the
# inbox until its payment is final (WAIT) or until refunds of it still in flight end (WAIT_REFUNDS),
# then applied or set aside.
APPLY, NOT_DISPUTABLE, MISMATCH, WAIT = "dispute", "not_disputable", "dispute_mismatch", "waiting_payment"
WAIT_REFUNDS = "waiting_refund"
WAITING = frozenset({WAIT, WAIT_REFUNDS})
# The filters a list of disputes takes (the fields a dispute has), and the statuses it may name.
LIST_FILTERS = ("status", "payment", "reference")
STATUSES = rules.STATUSES


def malformed(notice: dict) -> str | None:
    """Why a channel's dispute notice cannot be stored, or None (the text fields' types and NULs are
    checked with the callback's: app.services.callbacks.malformed)."""
    amount = notice.get("amount")
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        return "dispute amount is not a positive integer"
    if notice.get("status") not in rules.STATUSES:
        return f"dispute status {str(notice.get('status'))[:20]!r} is not one of {', '.join(rules.STATUSES)}"
    if not isinstance(notice.get("channel_reference"), str) or not 0 < len(notice["channel_reference"]) <= 200:
        return "dispute channel_reference is not a string of 1 to 200 characters"
    if notice.get("reason") is not None and (not isinstance(notice["reason"], str) or len(notice["reason"]) > 60):
        return "dispute reason is not a string of at most 60 characters"
    return None


def screen(payment: Operation, notice: dict) -> str:
    """What a dispute notice about ``payment`` can be told before its payment's row is locked: WAIT
    (the payment not final yet: its own callback or status query still to come), NOT_DISPUTABLE
    (not a payment that succeeded), else APPLY: to be judged by ``report`` under the payment's lock,
    on what the payment holds then (a drain batch's own settlements included), never on what the
    batch read before them."""
    if payment.kind == "payment" and payment.status in OPEN:
        log.info("dispute %s reported for %s, which is still %s: kept until it is final",
                 notice.get("channel_reference"), payment.id, payment.status)
        return WAIT
    if payment.kind != "payment" or payment.status != SUCCEEDED:
        log.warning("dispute %s reported for %s, which is a %s %s: set aside", notice.get("channel_reference"),
                    payment.id, payment.status, payment.kind)
        return NOT_DISPUTABLE
    return APPLY


def verdict(payment: Operation, notice: dict, disputed: int = 0, refunding: int = 0) -> str:
    """Whether a dispute notice about ``payment`` can be applied (``screen``, then the amount): in its
    currency, of at most what it settled less what was refunded and ``disputed`` (what its other
    disputes hold: open or lost; refunds and chargebacks together never take back more than the
    payment). ``refunding``: what of ``amount_refunded`` is reserved by refunds still in flight, which
    may yet fail and give it back; a notice that fits only if they fail waits for them (WAIT_REFUNDS),
    to be judged on the refunds that succeeded; one that fits even if they succeed is applied."""
    if (screened := screen(payment, notice)) != APPLY:
        return screened
    settled = payment.amount_captured if payment.amount_captured is not None else payment.amount
    left = settled - (payment.amount_refunded or 0) - disputed  # refunds and other disputes took the rest
    if notice.get("currency") == payment.currency and left < notice["amount"] <= left + refunding:
        log.info("dispute %s of %s %s for %s fits only if refunds of it in flight (%s) fail: kept until they "
                 "end", notice.get("channel_reference"), notice["amount"], notice.get("currency"), payment.id,
                 refunding)
        return WAIT_REFUNDS
    if notice.get("currency") != payment.currency or notice["amount"] > left:
        log.warning("dispute %s of %s %s does not fit payment %s (%s %s left of %s after refunds and "
                    "other disputes): set aside",
                    notice.get("channel_reference"), notice["amount"], notice.get("currency"), payment.id, left,
                    payment.currency, settled)
        return MISMATCH
    return APPLY


def report(session: Session, payment: Operation, notice: dict) -> str:
    """Apply a channel's word on a dispute of ``payment`` (screened by ``screen``): ``applied`` if it
    changed anything, else ``duplicate``. A new dispute is written only on the payment's row locked
    (``_lock``) and judged there (``verdict``): a refund takes the same row (app.services.payments), so one
    committed meanwhile is seen, and a dispute that does not fit is set aside (``MISMATCH``) or, if
    it fits only should refunds in flight fail, kept to be judged again (``WAIT_REFUNDS``)."""
    dispute, opened = _find(session, payment.channel, notice["channel_reference"]), False
    if dispute is None:
        _lock(session, payment)
        again = verdict(payment, notice, _held_by_disputes(session, payment), _refunds_in_flight(session, payment))
        if again != APPLY:
            return again
        dispute, opened = _open(session, payment, notice)
    closed = notice["status"] in rules.CLOSED and _close(session, payment, dispute, notice["status"])
    return "applied" if opened or closed else "duplicate"


def _lock(session: Session, payment: Operation) -> None:
    """The payment's row locked until the transaction ends (``FOR NO KEY UPDATE``, as a refund takes it;
    SQLite has one writer at a time already) and what a dispute is measured against read anew under it."""
    row = session.execute(select(Operation.status, Operation.amount_captured, Operation.amount_refunded)
                          .where(Operation.id == payment.id).with_for_update(key_share=True)).one()
    for name, value in zip(("status", "amount_captured", "amount_refunded"), row, strict=True):
        set_committed_value(payment, name, value)


def _held_by_disputes(session: Session, payment: Operation) -> int:
    """What the payment's disputes hold back: open ones and lost ones (a won dispute gave it back).
    Read under the payment's lock, which every new dispute of it takes first."""
    return session.scalar(select(func.coalesce(func.sum(Dispute.amount), 0)).where(
        Dispute.payment_id == payment.id, Dispute.status.in_(rules.BLOCKS_REFUNDS)))


def _refunds_in_flight(session: Session, payment: Operation) -> int:
    """What the payment's refunds not final yet reserve of its ``amount_refunded`` (a refund's
    reservation and its failure's release both take the payment's row, locked here)."""
    return session.scalar(select(func.coalesce(func.sum(Operation.amount), 0)).where(
        Operation.payment_id == payment.id, Operation.kind == "refund", Operation.status.in_(sorted(OPEN))))


def _open(session: Session, payment: Operation, notice: dict) -> tuple[Dispute, bool]:
    """The dispute the notice names, written (with its debit and event) unless another worker's
    transaction wrote it meanwhile."""
    now = utcnow()
    dispute = Dispute(id=new_id("dp"), merchant_id=payment.merchant_id, livemode=payment.livemode,
                      payment_id=payment.id, amount=notice["amount"], currency=payment.currency,
                      reason=notice.get("reason") or rules.DEFAULT_REASON, status=rules.NEEDS_RESPONSE, version=0,
                      channel=payment.channel, channel_reference=notice["channel_reference"],
                      channel_account_id=payment.channel_account_id, metadata_={},
                      request_id=context.current_request_id(), created_at=now, updated_at=now)
    if not add_unique(session, dispute):  # reported meanwhile by another worker's transaction
        return _find(session, payment.channel, notice["channel_reference"]), False
    _post(session, payment, dispute, [postings.dispute_opened(dispute.amount)])
    events.record(session, merchant_id=dispute.merchant_id, livemode=dispute.livemode, type="dispute.created",
                  object_id=dispute.id, data=representation(dispute))
    log.info("dispute %s of %s on payment %s reported by %s", dispute.id, dispute.amount, payment.id,
             dispute.channel, extra={"channel": dispute.channel})
    return dispute, True


def _close(session: Session, payment: Operation, dispute: Dispute, status: str) -> bool:
    """Close ``dispute`` as ``status``: one compare-and-set; False if it was not open (already closed)."""
    if not rules.closes(dispute.status, status):
        return False
    now = utcnow()
    won = session.execute(
        update(Dispute).where(Dispute.id == dispute.id, Dispute.status == dispute.status,
                              Dispute.version == dispute.version)
        .values(status=status, version=dispute.version + 1, updated_at=now, closed_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if won != 1:
        return False
    for name, value in (("status", status), ("version", dispute.version + 1), ("updated_at", now),
                        ("closed_at", now)):
        set_committed_value(dispute, name, value)
    _post(session, payment, dispute, postings.dispute_closed(status, dispute.amount))
    events.record(session, merchant_id=dispute.merchant_id, livemode=dispute.livemode, type="dispute.closed",
                  object_id=dispute.id, data=representation(dispute))
    log.info("dispute %s closed %s", dispute.id, status, extra={"channel": dispute.channel})
    return True


def _post(session: Session, payment: Operation, dispute: Dispute, entries: list[postings.Entry]) -> None:
    """The entries on the payment's accounts (its channel's clearing, the merchant's settlement)."""
    for kind, legs in entries_on(session, payment, entries):
        ledger.post(session, merchant_id=dispute.merchant_id, kind=kind, source_id=dispute.id, legs=legs)


def _find(session: Session, channel_id: str, channel_reference: str) -> Dispute | None:
    return session.scalars(select(Dispute).where(Dispute.channel == channel_id,
                                                 Dispute.channel_reference == channel_reference)).first()


def refuse_refund(session: Session, payment: Operation) -> None:
    """A payment with an open or lost dispute is not refunded (the chargeback already gives, or may
    give, the money back): 409 ``payment_disputed``, before any channel is called. A won dispute
    leaves the rest refundable."""
    dispute = session.scalars(select(Dispute).where(
        Dispute.merchant_id == payment.merchant_id, Dispute.livemode == payment.livemode,
        Dispute.payment_id == payment.id, Dispute.status.in_(sorted(rules.BLOCKS_REFUNDS)))
        .order_by(Dispute.created_at, Dispute.id).limit(1)).first()
    if dispute is not None:
        raise Conflict(f"payment {payment.id} has a {dispute.status} dispute {dispute.id}: a disputed payment is "
                       "not refunded (the chargeback returns the money); a won dispute allows refunds again",
                       param="payment", code="payment_disputed")


def get_dispute(session: Session, merchant: Merchant, dispute_id: str) -> Dispute:
    dispute = session.get(Dispute, dispute_id)
    if dispute is None or dispute.merchant_id != merchant.id or dispute.livemode != merchant.livemode:
        raise NotFound(f"No such dispute: '{dispute_id}'", param="id")
    return dispute


def list_disputes(session: Session, merchant: Merchant, query: ListQuery) -> Page:
    return page(session, Dispute, merchant_id=merchant.id, query=query, columns={"payment": Dispute.payment_id},
                where=(Dispute.livemode == merchant.livemode,))


def of_payment(session: Session, payment: Operation) -> list[Dispute]:
    """A payment's disputes, oldest first (the console's timeline; through ix_disputes_list_payment)."""
    return list(session.scalars(select(Dispute).where(
        Dispute.merchant_id == payment.merchant_id, Dispute.livemode == payment.livemode,
        Dispute.payment_id == payment.id).order_by(Dispute.created_at, Dispute.id)))


def representation(dispute: Dispute) -> dict:
    return {
        "id": dispute.id,
        "object": "dispute",
        "livemode": dispute.livemode,
        "created_at": rfc3339(dispute.created_at),
        "payment": dispute.payment_id,
        "amount": dispute.amount,
        "currency": dispute.currency,
        "reason": dispute.reason,
        "status": dispute.status,
        "closed_at": rfc3339(dispute.closed_at),
        "reference": dispute.reference,
        "metadata": dispute.metadata_ or {},
    }
