"""转账: an atomic move between two accounts of one merchant."""
from __future__ import annotations

from sqlalchemy.orm import Session

from app import context
from app.adapters import metrics
from app.adapters.db import add_unique
from app.adapters.models import Merchant, Transfer, new_id
from app.domain import postings
from app.domain.errors import InvalidRequest, NotFound, Unprocessable
from app.domain.kinds import OperationKind
from app.domain.postings import Role
from app.services import events, ledger, representation
from app.services.accounts import get_accounts
from app.services.listing import ListQuery, Page, page
from app.services.payments import guard

# A transfer is succeeded or rejected (a refused request writes none): the statuses a list filters by.
STATUSES = frozenset({"succeeded"})


def create_transfer(session: Session, merchant: Merchant, body: dict) -> Transfer:
    guard("transfer")
    if body["from_account"] == body["to_account"]:
        raise InvalidRequest("from_account and to_account must differ", param="to_account")
    source, target = get_accounts(session, merchant, {"from_account": body["from_account"],
                                                      "to_account": body["to_account"]})
    for name, account in (("from_account", source), ("to_account", target)):
        if account.currency != body["currency"]:
            raise Unprocessable(f"{name} holds {account.currency}, not {body['currency']}", param="currency",
                                code="currency_mismatch")
    transfer = Transfer(
        id=new_id(OperationKind.TRANSFER.id_prefix), merchant_id=merchant.id, livemode=merchant.livemode,
        from_account_id=source.id, to_account_id=target.id, amount=body["amount"], currency=body["currency"],
        reference=body["reference"], metadata_=body.get("metadata") or {}, status="succeeded",
        request_id=context.current_request_id(),
    )
    context.set_object_id(transfer.id)
    if not add_unique(session, transfer):
        raise Unprocessable("reference is already used by another transfer", param="reference",
                            code="reference_already_used")
    # The event first, the balances last, and on PostgreSQL the two accounts' rows moved only in the
    # COMMIT's round trip (the stored response, the moves, the COMMIT): a hot pair's rows stay locked
    # for the commit alone, not across this request's further round trips and Python.
    events.record(session, merchant_id=merchant.id, livemode=transfer.livemode, type="transfer.succeeded",
                  object_id=transfer.id, data=representation.transfer(transfer))
    entry = postings.transfer(transfer.amount)
    ledger.post(session, merchant_id=merchant.id, kind=entry.kind, source_id=transfer.id,
                legs=ledger.legs_of(entry, {Role.SOURCE: source, Role.TARGET: target}.__getitem__), at_commit=True)
    metrics.settled_on_commit(session, "transfer", transfer.status, None)
    return transfer


def get_transfer(session: Session, merchant: Merchant, transfer_id: str) -> Transfer:
    transfer = session.get(Transfer, transfer_id)
    if transfer is None or transfer.merchant_id != merchant.id or transfer.livemode != merchant.livemode:
        raise NotFound(f"No such transfer: '{transfer_id}'", param="id")
    return transfer


def list_transfers(session: Session, merchant: Merchant, query: ListQuery) -> Page:
    return page(session, Transfer, merchant_id=merchant.id, query=query,
                where=(Transfer.livemode == merchant.livemode,))
