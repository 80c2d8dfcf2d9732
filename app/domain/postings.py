"""Posting rules: the journal entries each money movement writes, as data.

A line names its account by role (whose money it is); the ledger service finds the rows. Amounts
are signed minor units, + raising the account's balance, and every entry's lines sum to zero.

| movement | entry | lines |
| --- | --- | --- |
| payment succeeded (channel) | payment | clearing −A · settlement +(A−F) · fee revenue +F |
| payment succeeded (balance) | payment | customer −A · settlement +(A−F) · fee revenue +F |
| top-up succeeded | topup | clearing −A · customer +A · fee |
| withdrawal created | withdrawal_hold | customer available −A · customer pending +A |
| withdrawal succeeded | withdrawal | customer pending −A · clearing +A · fee |
| withdrawal failed | withdrawal_release | customer pending −A · customer available +A |
| refund succeeded | refund | settlement −A · clearing (balance: customer) +A |
| transfer | transfer | source −A · target +A |
| payment authorized (requires_capture) | — | nothing: the money is only held at the channel |
| payment captured | payment | as "payment succeeded", A the captured amount, F its fee |
| authorization voided (canceled) | — | nothing: the hold is released at the channel |
| dispute reported (chargeback) | dispute | settlement −D · clearing +D |
| dispute won | dispute_reversal | clearing −D · settlement +D |
| dispute lost | — | nothing: the debit at its report stands |

"fee" is settlement −F · fee revenue +F, and nothing when F is 0. Any other failure writes nothing:
a failed payment, top-up or refund never moved money (a fee is charged only on success). A payment
that waits (requires_action, requires_capture) or is canceled moved nothing either: only a capture
moves money, and only what it captured (the rest of the authorization is released, never posted).
A dispute (D, the amount the channel took back) is debited from the merchant when the channel reports
it, before anyone knows how it ends (the channel has already taken the money back); the payment's fee
stays charged. Won, the debit is reversed; lost, it stands.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from app.domain.disputes import DISPUTE_LOST, DISPUTE_WON
from app.domain.states import FAILED, SUCCEEDED

AVAILABLE = "available"
PENDING = "pending"


class Role(Enum):
    """Whose account a line moves."""

    CUSTOMER = "customer"  # a top-up's or withdrawal's account; a balance payment's payer, repaid by its refund
    CLEARING = "clearing"  # the operation's channel's clearing account
    SETTLEMENT = "settlement"  # what the merchant is owed
    FEE_REVENUE = "fee_revenue"  # the fees charged to the merchant
    SOURCE = "source"  # a transfer's from_account
    TARGET = "target"  # a transfer's to_account


@dataclass(frozen=True)
class Line:
    role: Role
    amount: int
    balance: str = AVAILABLE


@dataclass(frozen=True)
class Entry:
    """One journal entry: ``kind`` as the ledger records it, and its lines."""

    kind: str
    lines: tuple[Line, ...]

    def __post_init__(self) -> None:
        if sum(line.amount for line in self.lines):
            raise ValueError(f"entry {self.kind} does not balance: {self.lines}")


def settlement(kind: str, status: str, amount: int, fee: int, *, in_ledger: bool = False) -> list[Entry]:
    """The entries an operation of ``kind`` writes when it becomes ``status`` (final).

    ``in_ledger``: the operation ran with no channel, inside the ledger (a payment from a customer's
    balance, or the refund of one), so the customer's account takes the clearing account's place."""
    payer = Role.CUSTOMER if in_ledger else Role.CLEARING
    if status == SUCCEEDED:
        if kind == "payment":
            # The fee revenue line stays even at 0 (the ledger drops a zero line when it posts).
            return [Entry("payment", (Line(payer, -amount), Line(Role.SETTLEMENT, amount - fee),
                                      Line(Role.FEE_REVENUE, fee)))]
        if kind == "topup":
            return [Entry("topup", (Line(Role.CLEARING, -amount), Line(Role.CUSTOMER, amount), *fee_lines(fee)))]
        if kind == "withdrawal":
            return [Entry("withdrawal", (Line(Role.CUSTOMER, -amount, PENDING), Line(Role.CLEARING, amount),
                                         *fee_lines(fee)))]
        if kind == "refund":
            return [Entry("refund", (Line(Role.SETTLEMENT, -amount), Line(payer, amount)))]
    if status == FAILED and kind == "withdrawal":
        return [Entry("withdrawal_release", (Line(Role.CUSTOMER, -amount, PENDING), Line(Role.CUSTOMER, amount)))]
    return []


def authorized(amount: int) -> list[Entry]:
    """A payment authorized for ``amount`` (requires_capture): nothing moves, the channel holds it."""
    return []


def captured(amount_captured: int, fee: int) -> list[Entry]:
    """A capture of ``amount_captured`` (all or part of the authorization) with ``fee``, the fee on
    the captured amount: posted as the payment's success of that amount; the rest posts nothing."""
    return settlement("payment", SUCCEEDED, amount_captured, fee)


def voided(amount: int) -> list[Entry]:
    """An authorization voided (canceled by the merchant, or expired at the channel): nothing moves."""
    return []


def fee_lines(fee: int) -> tuple[Line, ...]:
    """A fee charged to the merchant: out of what it is owed, into fee revenue."""
    return (Line(Role.SETTLEMENT, -fee), Line(Role.FEE_REVENUE, fee)) if fee else ()


def withdrawal_hold(amount: int) -> Entry:
    """A withdrawal's amount set aside when it is created: refused (by the ledger) when short."""
    return Entry("withdrawal_hold", (Line(Role.CUSTOMER, -amount), Line(Role.CUSTOMER, amount, PENDING)))


def transfer(amount: int) -> Entry:
    return Entry("transfer", (Line(Role.SOURCE, -amount), Line(Role.TARGET, amount)))


def dispute_opened(amount: int) -> Entry:
    """A chargeback of ``amount`` reported by the payment's channel: the channel takes it back out of
    what the merchant is owed (clearing is owed it again, as before the payment)."""
    return Entry("dispute", (Line(Role.SETTLEMENT, -amount), Line(Role.CLEARING, amount)))


def dispute_closed(status: str, amount: int) -> list[Entry]:
    """A dispute of ``amount`` closed ``status`` (``won`` or ``lost``): won gives the merchant the
    debit back; lost moves nothing more."""
    if status == DISPUTE_WON:
        return [Entry("dispute_reversal", (Line(Role.CLEARING, -amount), Line(Role.SETTLEMENT, amount)))]
    if status == DISPUTE_LOST:
        return []
    raise ValueError(f"a dispute closes won or lost, not {status}")
