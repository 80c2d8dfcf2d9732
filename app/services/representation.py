"""Public JSON representations of our objects (used by the API and by events)."""
from __future__ import annotations

from datetime import datetime

from app.adapters.models import Account, LedgerLine, Transfer


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"


def account(obj: Account) -> dict:
    return {
        "id": obj.id,
        "object": "account",
        "livemode": obj.livemode,
        "created_at": rfc3339(obj.created_at),
        "currency": obj.currency,
        "customer": obj.customer,
        "reference": obj.reference,
        "metadata": obj.metadata_ or {},
        "balance": {"available": obj.available, "pending": obj.pending},
    }


def ledger_line(obj: LedgerLine, entry_kind: str | None = None, source_id: str | None = None,
                livemode: bool = False) -> dict:
    """A ledger line of an account (``livemode``: the account's)."""
    return {
        "id": obj.id,
        "object": "ledger_entry",
        "livemode": livemode,
        "created_at": rfc3339(obj.created_at),
        "account": obj.account_id,
        "journal_entry": obj.entry_id,
        "amount": obj.amount,
        "currency": obj.currency,
        "balance_type": obj.balance_type,
        "kind": entry_kind,
        "source": source_id,
    }


def transfer(obj: Transfer) -> dict:
    return {
        "id": obj.id,
        "object": "transfer",
        "livemode": obj.livemode,
        "created_at": rfc3339(obj.created_at),
        "from_account": obj.from_account_id,
        "to_account": obj.to_account_id,
        "amount": obj.amount,
        "currency": obj.currency,
        "status": obj.status,
        "reference": obj.reference,
        "metadata": obj.metadata_ or {},
    }


UNCHARGED = ("failed", "canceled")


def _capture(op) -> dict:
    """A payment's capture: how it is captured, what was (a partial capture releases the rest), until
    when an authorization holds, and where its customer completes a step (requires_action)."""
    if op.amount_captured is not None:
        captured = op.amount_captured
    else:  # captured in full by its success; nothing while it waits, or once it failed or was canceled
        captured = op.amount if op.status == "succeeded" else 0
    out = {"capture_method": op.capture_method or "automatic", "amount_captured": captured,
           "next_action": op.next_action if op.status == "requires_action" else None}
    if op.capture_before is not None and op.status == "requires_capture":
        out["capture_before"] = rfc3339(op.capture_before)
    if op.status == "canceled":
        out["cancellation_reason"] = op.reason
    return out


def operation(op, attempts: list) -> dict:
    """A payment, top-up, withdrawal or refund, with how it was routed and what was tried."""
    out = {
        "id": op.id,
        "object": op.kind,
        "livemode": op.livemode,
        "created_at": rfc3339(op.created_at),
        "status": op.status,
        "review": bool(op.review),  # processing, and the channel answered "unknown operation" (§1)
        "amount": op.amount,
        "currency": op.currency,
        "fee": 0 if op.status in UNCHARGED else op.fee,  # a fee is charged only on success
        "reference": op.reference,
        "metadata": op.metadata_ or {},
        "customer": op.customer,
    }
    if op.kind == "payment":
        out.update(payment_method=op.payment_method, description=op.description, amount_refunded=op.amount_refunded,
                   order=op.order_id)
        out.update(_capture(op))
    elif op.kind == "topup":
        out.update(account=op.account_id, payment_method=op.payment_method)
    elif op.kind == "withdrawal":
        out.update(account=op.account_id, destination=op.destination)
    else:
        out.update(payment=op.payment_id, reason=op.reason, order=op.order_id)  # its payment's order
    out.update(
        routing=dict(op.routing or {}),
        attempts=[{k: v for k, v in (("channel", a.channel), ("status", a.status), ("error_code", a.error_code))
                   if v is not None or k != "error_code"} for a in attempts],
        failure_code=op.failure_code,
        failure_message=op.failure_message,
    )
    return out
