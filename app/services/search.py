"""Transaction search for operators (the console's "Transactions"): operations and transfers of
every merchant, newest first, by id, reference, order, customer, status, kind, channel, merchant and date.

Pages are keyset pages on (created_at, id), never OFFSET: page 1,000 costs what page 1 does. Each
filter is served by an index of 0014_admin_search; the two tables are read separately (each its
own newest ``limit + 1`` rows past the cursor) and merged.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime

from sqlalchemy import literal_column, select, tuple_
from sqlalchemy.orm import Session

from app.adapters.db import read_only
from app.adapters.models import Dispute, Operation, Transfer
from app.domain.errors import InvalidRequest
from app.domain.kinds import OperationKind
from app.domain.states import CANCELED, FAILED, PENDING, PROCESSING, REQUIRES_ACTION, REQUIRES_CAPTURE, SUCCEEDED
from app.services.representation import rfc3339

# A payment's own statuses too: the payments waiting on a customer or a capture are what ops look for.
STATUSES = (PENDING, PROCESSING, REQUIRES_ACTION, REQUIRES_CAPTURE, SUCCEEDED, FAILED, CANCELED)
MAX_LIMIT = 200


@dataclass(frozen=True)
class Criteria:
    """What to look for; every field optional, all given fields must match. ``since`` inclusive,
    ``until`` exclusive (naive UTC). ``customer``: the customer's id as the merchant sent it; ``order``: an
    ``ord_…`` id (its payments and refunds; a transfer has none)."""

    id: str | None = None
    reference: str | None = None
    order: str | None = None
    customer: str | None = None
    status: str | None = None
    kind: str | None = None
    channel: str | None = None
    merchant: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def checked(self) -> Criteria:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        cleaned = {k: (v.strip() or None) if isinstance(v, str) else v for k, v in values.items()}
        out = replace(self, **cleaned)
        if out.kind is not None and out.kind not in OperationKind.values():
            raise InvalidRequest(f"kind is one of {', '.join(OperationKind.values())}", param="kind")
        if out.status is not None and out.status not in STATUSES:
            raise InvalidRequest(f"status is one of {', '.join(STATUSES)}", param="status")
        if out.since and out.until and out.since >= out.until:
            raise InvalidRequest("the date range ends before it starts", param="until")
        return out


@dataclass(frozen=True)
class Results:
    rows: list[dict]
    next_cursor: str | None  # pass as ``after`` for the next page; None: this is the last


def disputed_payment(object_id: str | None) -> str | None:
    """The payment of the dispute ``object_id`` (a ``dp_…`` id typed in the search box), or None:
    the console opens that payment's page, whose timeline tells the dispute."""
    object_id = (object_id or "").strip()
    if not object_id.startswith("dp_"):
        return None
    with read_only() as session:
        return session.scalar(select(Dispute.payment_id).where(Dispute.id == object_id))


def encode_cursor(created_at: datetime, object_id: str) -> str:
    return f"{created_at.isoformat()}~{object_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        moment, object_id = cursor.split("~", 1)
        return datetime.fromisoformat(moment), object_id
    except ValueError:
        raise InvalidRequest("not a cursor of this search", param="after") from None


def keyset_page(session: Session, query, model, limit: int, after: str | None):
    """One page of ``query``'s rows of ``model``, newest first (ties on ``created_at`` by id), after the
    cursor ``after`` (``encode_cursor``), at most ``limit`` (1-200): ``(rows, cursor of the next page or
    None)``. One ``limit + 1`` read on (created_at, id), never OFFSET."""
    limit = max(1, min(int(limit), 200))
    if after:
        query = query.where(tuple_(model.created_at, model.id) < tuple_(*decode_cursor(after)))
    rows = list(session.scalars(query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], cursor


def cursor_after(session: Session, model, object_id: str, noun: str) -> str:
    """The ``keyset_page`` cursor just after the object ``object_id`` (an API's ``starting_after``);
    400 naming ``starting_after`` if there is no such ``noun``."""
    last = session.get(model, object_id)
    if last is None:
        raise InvalidRequest(f"No such {noun}: '{object_id}'", param="starting_after")
    return encode_cursor(last.created_at, last.id)


def search(criteria: Criteria, limit: int = 50, after: str | None = None) -> Results:
    """One page of matching operations and transfers, newest first."""
    criteria = criteria.checked()
    limit = max(1, min(int(limit), MAX_LIMIT))
    cursor = decode_cursor(after) if after else None
    with read_only() as session:
        found = []
        if criteria.kind != "transfer":
            found += [_operation_row(op) for op in _operations(session, criteria, limit + 1, cursor)]
        if criteria.kind in (None, "transfer") and not (criteria.customer or criteria.channel or criteria.order):
            found += [_transfer_row(t) for t in _transfers(session, criteria, limit + 1, cursor)]
    found.sort(key=lambda row: (row["_created"], row["id"]), reverse=True)
    page = found[:limit]
    next_cursor = encode_cursor(page[-1]["_created"], page[-1]["id"]) if len(found) > limit else None
    return Results([{k: v for k, v in row.items() if k != "_created"} for row in page], next_cursor)


def _common(model, criteria: Criteria, cursor, limit: int):
    query = select(model)
    if criteria.id:
        query = query.where(model.id == criteria.id)
    if criteria.reference:
        query = query.where(model.reference == criteria.reference)
    if criteria.merchant:
        query = query.where(model.merchant_id == criteria.merchant)
    if criteria.status:
        query = query.where(model.status == criteria.status)
    if criteria.since:
        query = query.where(model.created_at >= criteria.since)
    if criteria.until:
        query = query.where(model.created_at < criteria.until)
    if cursor:
        query = query.where(tuple_(model.created_at, model.id) < tuple_(*cursor))
    return query.order_by(model.created_at.desc(), model.id.desc()).limit(limit)


# Written as the index ix_operations_customer is, so PostgreSQL's planner matches the two.
_CUSTOMER_ID = literal_column("operations.customer ->> 'id'")


def _operations(session: Session, criteria: Criteria, limit: int, cursor) -> list[Operation]:
    query = _common(Operation, criteria, cursor, limit)
    if criteria.kind:
        query = query.where(Operation.kind == criteria.kind)
    if criteria.channel:
        query = query.where(Operation.channel == criteria.channel)
    if criteria.customer:
        query = query.where(_CUSTOMER_ID == criteria.customer)
    if criteria.order:
        query = query.where(Operation.order_id == criteria.order)
    return list(session.scalars(query))


def _transfers(session: Session, criteria: Criteria, limit: int, cursor) -> list[Transfer]:
    return list(session.scalars(_common(Transfer, criteria, cursor, limit)))


def _operation_row(op: Operation) -> dict:
    return {"id": op.id, "object": op.kind, "merchant": op.merchant_id, "livemode": op.livemode,
            "status": op.status, "review": bool(op.review), "amount": op.amount, "currency": op.currency,
            "fee": op.fee if op.status != "failed" else 0, "channel": op.channel, "reference": op.reference,
            "customer": (op.customer or {}).get("id"), "failure_code": op.failure_code,
            "created_at": rfc3339(op.created_at), "_created": op.created_at}


def _transfer_row(t: Transfer) -> dict:
    return {"id": t.id, "object": "transfer", "merchant": t.merchant_id, "livemode": t.livemode,
            "status": t.status, "review": False, "amount": t.amount, "currency": t.currency, "fee": 0,
            "channel": None, "reference": t.reference, "customer": None, "failure_code": None,
            "created_at": rfc3339(t.created_at), "_created": t.created_at}
