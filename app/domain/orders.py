"""An order's money and status as pure rules: what a payment may reserve, what a settlement does.

An order keeps three sums: ``paid`` (its succeeded payments), ``in_flight`` (payments written
but not final: processing, requires_action, requires_capture) and ``refunded`` (its succeeded
refunds). A payment reserves its amount in ``in_flight`` when it is created, and only if
``paid + in_flight + amount`` stays within the order's amount: so a payment whose success would
pay the order beyond its amount never reaches a channel, and two payments racing for what is
left of one order cannot both be let through. Settling moves the reservation to ``paid`` (a
success) or gives it back (anything else).

``paid`` counts every success, refunds or not: a refund does not make room for another payment
(a fully refunded order is closed, not open again).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

OPEN, PAID, PARTIALLY_REFUNDED, REFUNDED = "open", "paid", "partially_refunded", "refunded"
STATUSES = (OPEN, PAID, PARTIALLY_REFUNDED, REFUNDED)


class OrderOverpaid(ValueError):
    """A payment of this amount, if it succeeded, would pay the order beyond its amount."""


@dataclass(frozen=True)
class OrderMoney:
    amount: int
    paid: int = 0
    in_flight: int = 0
    refunded: int = 0

    @property
    def status(self) -> str:
        """``open`` until paid in full; then ``paid``, ``partially_refunded`` or ``refunded``
        by what was refunded of what was paid."""
        if self.paid < self.amount:
            return OPEN
        if self.refunded == 0:
            return PAID
        return REFUNDED if self.refunded >= self.paid else PARTIALLY_REFUNDED

    @property
    def payable(self) -> int:
        """What a new payment may still take: neither paid nor held by a payment in flight."""
        return max(self.amount - self.paid - self.in_flight, 0)

    def reserve(self, amount: int) -> OrderMoney:
        if amount > self.payable:
            raise OrderOverpaid(amount)
        return replace(self, in_flight=self.in_flight + amount)

    def payment_settled(self, reserved: int, paid: int) -> OrderMoney:
        """A payment that reserved ``reserved`` is final, having paid ``paid`` (0 unless it
        succeeded; less than ``reserved`` for a partial capture)."""
        return replace(self, in_flight=max(self.in_flight - reserved, 0), paid=self.paid + paid)

    def refund_succeeded(self, amount: int) -> OrderMoney:
        return replace(self, refunded=self.refunded + amount)


def became_paid(before: OrderMoney, after: OrderMoney) -> bool:
    """The transition ``order.paid`` announces: the order was not paid in full, now it is."""
    return before.paid < before.amount <= after.paid
