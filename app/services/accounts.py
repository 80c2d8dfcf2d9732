"""Stored-value accounts (wallets) of a merchant's customers."""
from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app import context
from app.adapters.db import add_unique
from app.adapters.models import Account, JournalEntry, LedgerLine, Merchant, new_id
from app.domain.errors import NotFound, Unprocessable
from app.services import ledger
from app.services.listing import ListQuery, Page, page


def create_account(session: Session, merchant: Merchant, body: dict) -> Account:
    account = Account(
        id=new_id("acct"), merchant_id=merchant.id, livemode=merchant.livemode, kind="customer",
        currency=body["currency"], customer=body["customer"], reference=body.get("reference"),
        metadata_=body.get("metadata") or {}, available=0, pending=0, version=0,
        request_id=context.current_request_id(),
    )
    if not add_unique(session, account):
        raise Unprocessable("reference is already used by another account", param="reference",
                            code="reference_already_used")
    context.set_object_id(account.id)
    return account


def get_account(session: Session, merchant: Merchant, account_id: str, param: str = "id") -> Account:
    account = session.get(Account, account_id)
    if not _sees(merchant, account):
        raise NotFound(f"No such account: '{account_id}'", param=param)
    return account


def _sees(merchant: Merchant, account: Account | None) -> bool:
    """A customer account of this merchant in its mode (any other answers 404, as an unknown id)."""
    return (account is not None and account.merchant_id == merchant.id and account.livemode == merchant.livemode
            and account.kind == "customer")


# Core, then plain detached objects: this runs on every transfer, so the statement and the
# attribute of each column are made once.
_BY_IDS = select(Account.__table__).where(Account.__table__.c.id.in_(bindparam("ids", expanding=True)))
_ATTRIBUTES: list[tuple[str, str]] = []


def get_accounts(session: Session, merchant: Merchant, wanted: dict[str, str]) -> list[Account]:
    """Several of the merchant's accounts in one query, in the order asked; ``wanted`` maps the
    request field naming each account to its id."""
    rows = session.connection().execute(_BY_IDS, {"ids": list(wanted.values())}).mappings()
    found = {row["id"]: _detached(row) for row in rows}
    for param, account_id in wanted.items():
        if not _sees(merchant, found.get(account_id)):
            raise NotFound(f"No such account: '{account_id}'", param=param)
    return [found[a] for a in wanted.values()]


def _detached(row) -> Account:
    if not _ATTRIBUTES:
        _ATTRIBUTES[:] = [(prop.key, prop.columns[0].name) for prop in Account.__mapper__.column_attrs]
    return Account(**{key: row[name] for key, name in _ATTRIBUTES})


def list_accounts(session: Session, merchant: Merchant, query: ListQuery) -> Page:
    return page(session, Account, merchant_id=merchant.id, query=query,
                where=(Account.livemode == merchant.livemode, Account.kind == "customer"))


def list_entries(session: Session, merchant: Merchant, account_id: str, query: ListQuery) -> Page:
    """The account's ledger lines, newest first, each with its journal entry's kind and source."""
    account = get_account(session, merchant, account_id)
    statement = (select(LedgerLine, JournalEntry.kind, JournalEntry.source_id)
                 .join(JournalEntry, JournalEntry.id == LedgerLine.entry_id))
    return page(session, LedgerLine, merchant_id=None, query=query, statement=statement,
                where=(LedgerLine.account_id == account.id,))


def fund_for_testing(session: Session, merchant: Merchant, account_id: str, amount: int) -> Account:
    """Test mode only: credit an account from the merchant's test-funding system account."""
    account = get_account(session, merchant, account_id)
    source = ledger.system_account(session, merchant.id, ledger.TEST_FUNDING, account.currency,
                                   livemode=account.livemode)
    ledger.post(session, merchant_id=merchant.id, kind="test_funding", source_id=account.id,
                legs=[ledger.Leg(account, amount), ledger.Leg(source, -amount)], description="test-mode funding")
    return account
