"""The kinds of money movement: the one list that every other list of kinds (switches, rule
facts, searches, ids, event types, and the enums of the JSON Schemas) is read from."""
from __future__ import annotations

from enum import StrEnum

from app.domain.states import CANCELED, FAILED, REQUIRES_ACTION, REQUIRES_CAPTURE, SUCCEEDED


class OperationKind(StrEnum):
    """A kind as the API, the database and the rules spell it.

    Payments, top-ups, withdrawals and refunds are operations: rows of one table, decided by
    the rules and run through a channel (or inside the ledger). A transfer moves money between
    two accounts of a merchant inside the ledger only: it can be paused and searched for like
    the others, but nothing routes it.
    """

    PAYMENT = "payment"
    TOPUP = "topup"
    WITHDRAWAL = "withdrawal"
    REFUND = "refund"
    TRANSFER = "transfer"

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """Every kind, as plain strings, in this order."""
        return _VALUES

    @classmethod
    def routed(cls) -> tuple[str, ...]:
        """The kinds the rules decide for and a channel may declare: the operations."""
        return _ROUTED

    @property
    def is_routed(self) -> bool:
        return self is not OperationKind.TRANSFER

    @property
    def id_prefix(self) -> str:
        """What an object of this kind's id starts with (``pay_…``)."""
        return _PREFIXES[self]

    @property
    def final_statuses(self) -> tuple[str, ...]:
        """The statuses that end an object of this kind: a transfer is written succeeded or refused."""
        return (SUCCEEDED, FAILED) if self.is_routed else (SUCCEEDED,)


_PREFIXES = {OperationKind.PAYMENT: "pay", OperationKind.TOPUP: "top", OperationKind.WITHDRAWAL: "wd",
             OperationKind.REFUND: "re", OperationKind.TRANSFER: "tr"}
_VALUES = tuple(kind.value for kind in OperationKind)
_ROUTED = tuple(kind.value for kind in OperationKind if kind.is_routed)

# An order's events: it is paid in full (app.domain.orders.became_paid), once.
ORDER_EVENT_TYPES: tuple[str, ...] = ("order.paid",)
# A dispute's events (app.domain.disputes): reported by the channel, then closed won or lost, once each.
DISPUTE_EVENT_TYPES: tuple[str, ...] = ("dispute.created", "dispute.closed")

# The event types (and webhook subscriptions): ``<kind>.<final status>``, and a payment's own
# statuses (contract §2): it waits for the customer, waits for its capture, or is canceled.
EVENT_TYPES: tuple[str, ...] = tuple(f"{kind.value}.{status}" for kind in OperationKind
                                     for status in kind.final_statuses) + tuple(
    f"payment.{status}" for status in (REQUIRES_ACTION, REQUIRES_CAPTURE, CANCELED)
) + ORDER_EVENT_TYPES + DISPUTE_EVENT_TYPES
