"""/v1/balance and /v1/balance_transactions: the merchant's settlement balance and its lines."""
from flask import Blueprint, g, request

from app.adapters.db import unit_of_work
from app.entrypoints.api.common import json_response, read
from app.entrypoints.api.openapi import ListOf, documented
from app.services import balance, idempotency
from app.services.validation import list_params, query_params

bp = Blueprint("balance", __name__)

FILTERS = [
    {"name": "type", "in": "query", "description": "The entry kind: payment, refund, topup, withdrawal, …",
     "schema": {"type": "string", "pattern": "^[a-z][a-z_]{0,39}$"}},
    {"name": "source", "in": "query", "description": "The object that moved the money (pay_…, re_…, top_…, wd_…)",
     "schema": {"type": "string", "pattern": "^[a-z]+_[A-Za-z0-9]{1,36}$"}},
    {"name": "currency", "in": "query", "description": "ISO 4217, in capitals",
     "schema": {"type": "string", "pattern": "^[A-Z]{3}$"}},
]


@bp.get("/v1/balance")
@documented("Retrieve the merchant's settlement balance per currency", answers="balance")
def get_balance():
    query_params(request.args, ())
    return read(lambda s: balance.balance(s, g.merchant))


@bp.get("/v1/balance_transactions")
@documented("List balance transactions", answers=ListOf("balance_transaction"), parameters=FILTERS)
def list_balance_transactions():
    query = list_params(request.args, extra=balance.FILTERS)
    filters = balance.filters_of(request.args)
    with unit_of_work() as session:
        page = balance.list_transactions(session, g.merchant, query, filters)
        data = [balance.representation(txn) for txn in page.items]
    return json_response(200, idempotency.encode({"object": "list", "url": "/v1/balance_transactions",
                                                  "data": data, "has_more": page.has_more}))


@bp.get("/v1/balance_transactions/<transaction_id>")
@documented("Retrieve a balance transaction", answers="balance_transaction")
def get_balance_transaction(transaction_id):
    query_params(request.args, ())
    return read(lambda s: balance.representation(balance.get_transaction(s, g.merchant, transaction_id)))
