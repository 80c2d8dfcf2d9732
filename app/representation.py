"""Public JSON representations of our objects (used by the API and by events)."""
from __future__ import annotations

from datetime import datetime

from app.models import Account, LedgerLine, Transfer


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"


def account(obj: Account) -> dict:
    return {
        "id": obj.id,
        "object": "account",
        "created_at": rfc3339(obj.created_at),
        "currency": obj.currency,
        "customer": obj.customer,
        "reference": obj.reference,
        "metadata": obj.metadata_ or {},
        "balance": {"available": obj.available, "pending": obj.pending},
    }


def ledger_line(obj: LedgerLine, entry_kind: str | None = None, source_id: str | None = None) -> dict:
    return {
        "id": obj.id,
        "object": "ledger_entry",
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
        "created_at": rfc3339(obj.created_at),
        "from_account": obj.from_account_id,
        "to_account": obj.to_account_id,
        "amount": obj.amount,
        "currency": obj.currency,
        "status": obj.status,
        "reference": obj.reference,
        "metadata": obj.metadata_ or {},
    }
