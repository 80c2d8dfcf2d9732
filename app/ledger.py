"""Double-entry ledger.

A journal entry is a set of lines whose amounts sum to zero per currency; it is written
in the same transaction as the business change it records. Account balances are kept
on the account row and moved by one conditional UPDATE per line
(``SET available = available + :delta WHERE id = :id AND available + :delta >= 0``):
the database applies it atomically under its row lock, so concurrent postings can
neither lose an update nor overdraw a customer account. Accounts are updated in id
order so two postings touching the same pair cannot deadlock. PostgreSQL also refuses
an unbalanced entry at commit (a deferred constraint trigger, migration 0001).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app import context
from app.domain.errors import InsufficientFunds, PayRouterError
from app.models import Account, JournalEntry, LedgerLine, new_id

AVAILABLE = "available"
PENDING = "pending"

# System accounts, one per merchant and currency, created on first use.
CHANNEL_CLEARING = "channel_clearing"  # + ":<channel id>"
MERCHANT_SETTLEMENT = "merchant_settlement"
FEE_REVENUE = "fee_revenue"
WITHDRAWAL_HOLDS = "withdrawal_holds"
TEST_FUNDING = "test_funding"


class UnbalancedEntry(PayRouterError):
    """A journal entry whose lines do not sum to zero per currency (a programming error)."""

    code = "ledger_unbalanced"


@dataclass(frozen=True)
class Leg:
    account: Account
    amount: int  # signed minor units; + raises this account's balance
    balance_type: str = AVAILABLE


def system_account(session: Session, merchant_id: str, code: str, currency: str) -> Account:
    """The merchant's system account ``code`` in ``currency``, created on first use."""
    query = select(Account).where(
        Account.merchant_id == merchant_id, Account.system_code == code, Account.currency == currency
    )
    account = session.scalars(query).first()
    if account:
        return account
    try:
        with session.begin_nested():
            account = Account(
                id=new_id("acct"), merchant_id=merchant_id, kind="system", system_code=code, currency=currency,
                metadata_={}, available=0, pending=0, version=0, request_id=context.current_request_id(),
            )
            session.add(account)
        return account
    except IntegrityError:  # created concurrently by another transaction
        return session.scalars(query).one()


def post(session: Session, *, merchant_id: str, kind: str, source_id: str | None, legs: list[Leg],
         description: str | None = None) -> JournalEntry:
    """Write one balanced journal entry and move the balances it touches."""
    legs = [leg for leg in legs if leg.amount]  # a zero line records nothing
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        if type(leg.amount) is not int:
            raise UnbalancedEntry("ledger amounts are integers in minor units")
        if leg.account.currency != leg.account.currency.upper():
            raise UnbalancedEntry("bad currency")
        totals[leg.account.currency] += leg.amount
    if not legs or any(totals.values()):
        raise UnbalancedEntry(f"entry {kind} does not balance: {dict(totals)}")

    request_id = context.current_request_id()
    entry = JournalEntry(id=new_id("je"), merchant_id=merchant_id, kind=kind, source_id=source_id,
                         description=description, request_id=request_id)
    session.add(entry)
    session.add_all([LedgerLine(id=new_id("ln"), entry_id=entry.id, account_id=leg.account.id,
                                balance_type=leg.balance_type, amount=leg.amount, currency=leg.account.currency,
                                request_id=request_id) for leg in legs])
    # The first UPDATE autoflushes the entry and its lines; a refused move rolls all of it back.
    for leg in sorted(legs, key=lambda item: (item.account.id, item.balance_type)):
        _move(session, leg)
    return entry


def _move(session: Session, leg: Leg) -> None:
    column = Account.available if leg.balance_type == AVAILABLE else Account.pending
    stmt = (
        update(Account)
        .where(Account.id == leg.account.id)
        .values({column: column + leg.amount, Account.version: Account.version + 1})
        .returning(Account.available, Account.pending, Account.version)
        .execution_options(synchronize_session=False)
    )
    if leg.amount < 0 and leg.account.kind == "customer":
        stmt = stmt.where(column + leg.amount >= 0)
    row = session.execute(stmt).first()
    if row is None:
        raise InsufficientFunds(f"account {leg.account.id} does not hold enough {leg.balance_type} balance",
                                param="amount")
    for name, value in zip(("available", "pending", "version"), row):
        set_committed_value(leg.account, name, value)
