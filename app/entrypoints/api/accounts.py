"""/v1/accounts: stored-value accounts and their ledger lines."""
from flask import Blueprint, g

from app.domain.errors import PermissionDenied
from app.entrypoints.api.common import create, listing, read
from app.entrypoints.api.openapi import ListOf, documented
from app.services import accounts
from app.services import representation as rep

bp = Blueprint("accounts", __name__)
ACCOUNTS = ListOf("account", ("customer", "reference"))


@bp.post("/v1/accounts")
@documented("Create a stored-value account", body="account_create", answers="account", status=201)
def create_account():
    return create("account_create", lambda s, body: (201, rep.account(accounts.create_account(s, g.merchant, body))))


@bp.get("/v1/accounts")
@documented("List accounts", answers=ACCOUNTS)
def list_accounts():
    def fetch(s, query):
        page = accounts.list_accounts(s, g.merchant, query)
        return [rep.account(a) for a in page.items], page.has_more

    return listing(fetch, "/v1/accounts", ACCOUNTS.filters)


@bp.get("/v1/accounts/<account_id>")
@documented("Retrieve an account", answers="account")
def get_account(account_id):
    return read(lambda s: rep.account(accounts.get_account(s, g.merchant, account_id)))


@bp.get("/v1/accounts/<account_id>/entries")
@documented("List an account's ledger lines", answers=ListOf("ledger_entry"))
def list_entries(account_id):
    def fetch(s, query):
        page = accounts.list_entries(s, g.merchant, account_id, query)
        return [rep.ledger_line(line, kind, source, g.merchant.livemode) for line, kind, source in page.items], \
            page.has_more

    return listing(fetch, f"/v1/accounts/{account_id}/entries")


@bp.post("/v1/test_helpers/accounts/<account_id>/fund")
@documented("Test mode: credit an account", body="test_funding", answers="account")
def fund_account(account_id):
    """Test mode only: credit an account, so flows can be tried before top-ups are wired."""
    if g.api_key.mode != "test":
        raise PermissionDenied("test helpers need a sk_test_ key", code="test_mode_only")
    return create("test_funding", lambda s, body: (
        200, rep.account(accounts.fund_for_testing(s, g.merchant, account_id, body["amount"]))))
