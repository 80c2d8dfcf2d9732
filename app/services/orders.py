"""Orders (``ord_…``): the merchant's sale, to which payments and refunds attach.

The rules of an order's money are app.domain.orders; here they are applied to the row. Each
change reads the order locked (``FOR UPDATE`` on PostgreSQL; SQLite writes one at a time) and
writes what the domain computed with a compare-and-set on its version, so two payments racing
for what is left of an order are decided one after the other: the second sees the first's
reservation. A payment reserves its amount when it is created (before any channel hears of it)
and its settlement, in the same transaction as the payment's own, turns the reservation into
``amount_paid`` or gives it back.
"""
from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app import context
from app.adapters.db import add_unique
from app.adapters.models import Merchant, Operation, Order, new_id, utcnow
from app.domain import orders as rules
from app.domain.errors import Conflict, NotFound, Unprocessable
from app.domain.states import FINAL, SUCCEEDED
from app.services import events
from app.services.listing import ListQuery, Page, page
from app.services.representation import rfc3339

log = logging.getLogger("payrouter.orders")


def create_order(session: Session, merchant: Merchant, body: dict) -> Order:
    now = utcnow()
    order = Order(id=new_id("ord"), merchant_id=merchant.id, livemode=merchant.livemode, amount=body["amount"],
                  currency=body["currency"], reference=body["reference"], customer=body.get("customer"),
                  description=body.get("description"), metadata_=body.get("metadata") or {}, amount_paid=0,
                  amount_in_flight=0, amount_refunded=0, status=rules.OPEN, version=0,
                  request_id=context.current_request_id(), created_at=now, updated_at=now)
    context.set_object_id(order.id)
    if not add_unique(session, order):
        raise Unprocessable("reference is already used by another order", param="reference",
                            code="reference_already_used")
    return order


def get_order(session: Session, merchant: Merchant, order_id: str, param: str = "id") -> Order:
    order = session.get(Order, order_id)
    if order is None or order.merchant_id != merchant.id or order.livemode != merchant.livemode:
        raise NotFound(f"No such order: '{order_id}'", param=param)
    return order


# The filters a list of orders takes (the fields an order has), and the statuses it may name.
LIST_FILTERS = ("status", "customer", "reference")
STATUSES = rules.STATUSES


def list_orders(session: Session, merchant: Merchant, query: ListQuery) -> Page:
    return page(session, Order, merchant_id=merchant.id, query=query, where=(Order.livemode == merchant.livemode,))


def reserve(session: Session, merchant: Merchant, order_id: str, amount: int, currency: str) -> Order:
    """Hold ``amount`` of the order for a payment about to be written: 409 ``order_amount_exceeded``
    if its success could pay the order beyond its amount (counting payments still in flight)."""
    order = _locked(session, get_order(session, merchant, order_id, param="order").id)
    _write(session, order, _reserved(order, amount, currency))
    return order


def payable(session: Session, merchant: Merchant, order_id: str, amount: int, currency: str) -> None:
    """What ``reserve`` would refuse, without holding anything (a simulated payment naming the order)."""
    _reserved(get_order(session, merchant, order_id, param="order"), amount, currency)


def _reserved(order: Order, amount: int, currency: str):
    """The order's money once ``amount`` more is held: 422 ``currency_mismatch``, 409 ``order_amount_exceeded``."""
    if currency != order.currency:
        raise Unprocessable(f"order {order.id} is in {order.currency}", param="currency", code="currency_mismatch")
    try:
        return _money(order).reserve(amount)
    except rules.OrderOverpaid:
        money = _money(order)
        held = f", {money.in_flight} held by payments not yet final" if money.in_flight else ""
        raise Conflict(f"order {order.id} can take at most {money.payable} more (amount {order.amount}, "
                       f"paid {money.paid}{held}); this payment's success would pay it beyond its amount",
                       param="amount", code="order_amount_exceeded") from None


def settled(session: Session, op: Operation, status: str) -> None:
    """An operation naming an order changed status; once it is final, its share of the order moves
    (a payment's reservation paid or given back; a refund's amount refunded), in the settlement's
    transaction, with ``order.paid`` once the order is paid in full."""
    if status not in FINAL:  # requires_action, requires_capture: the reservation stays held
        return
    order = _locked(session, op.order_id)
    before = _money(order)
    if op.kind == "payment":
        after = before.payment_settled(op.amount, paid_amount(op) if status == SUCCEEDED else 0)
    elif op.kind == "refund" and status == SUCCEEDED:
        after = before.refund_succeeded(op.amount)
    else:
        return
    _write(session, order, after)
    if rules.became_paid(before, after):
        events.record(session, merchant_id=order.merchant_id, livemode=order.livemode, type="order.paid",
                      object_id=order.id, data=representation(order, *_attached(session, [order.id])[order.id]))


def paid_amount(op: Operation) -> int:
    """What a succeeded payment paid the order: what was captured of it, where a capture says so."""
    return op.amount if op.amount_captured is None else op.amount_captured


def _locked(session: Session, order_id: str) -> Order:
    """The order as it is now, its row locked until the transaction ends (PostgreSQL; SQLite
    already writes one transaction at a time)."""
    return session.scalars(select(Order).where(Order.id == order_id).with_for_update()
                           .execution_options(populate_existing=True)).one()


def _money(order: Order) -> rules.OrderMoney:
    return rules.OrderMoney(order.amount, order.amount_paid, order.amount_in_flight, order.amount_refunded)


def _write(session: Session, order: Order, after: rules.OrderMoney) -> None:
    """The compare-and-set: the order's sums and status as ``after``, if its version is still the one read."""
    values = {"amount_paid": after.paid, "amount_in_flight": after.in_flight, "amount_refunded": after.refunded,
              "status": after.status, "version": order.version + 1, "updated_at": utcnow()}
    written = session.execute(update(Order).where(Order.id == order.id, Order.version == order.version)
                              .values(**values).execution_options(synchronize_session=False))
    if written.rowcount != 1:  # cannot happen under the row lock; refuse rather than lose a change
        raise Conflict(f"order {order.id} changed meanwhile; retry", code="order_changed")
    for name, value in values.items():
        set_committed_value(order, name, value)


def _attached(session: Session, order_ids: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """The payments and refunds of each order (ids, oldest first, every attempt included), in one statement."""
    found: dict[str, tuple[list[str], list[str]]] = {order_id: ([], []) for order_id in order_ids}
    if not order_ids:
        return found
    rows = session.execute(select(Operation.order_id, Operation.kind, Operation.id)
                           .where(Operation.order_id.in_(order_ids))
                           .order_by(Operation.order_id, Operation.created_at, Operation.id))
    for order_id, kind, op_id in rows:
        payments, refunds = found[order_id]
        (payments if kind == "payment" else refunds).append(op_id)
    return found


def view(session: Session, order: Order) -> dict:
    return representation(order, *_attached(session, [order.id])[order.id])


def views(session: Session, orders: list[Order]) -> list[dict]:
    """A page of orders as the API shows them: two statements whatever the page's size."""
    attached = _attached(session, [order.id for order in orders])
    return [representation(order, *attached[order.id]) for order in orders]


def representation(order: Order, payments: list[str], refunds: list[str]) -> dict:
    return {
        "id": order.id,
        "object": "order",
        "livemode": order.livemode,
        "created_at": rfc3339(order.created_at),
        "amount": order.amount,
        "currency": order.currency,
        "reference": order.reference,
        "customer": order.customer,
        "description": order.description,
        "metadata": order.metadata_ or {},
        "status": order.status,
        "amount_paid": order.amount_paid,
        "amount_refunded": order.amount_refunded,
        "payments": payments,
        "refunds": refunds,
    }
