"""/v1/transfers: 转账 between two accounts of the merchant."""
from flask import Blueprint, g

from app.entrypoints.api.common import create, listing, read
from app.entrypoints.api.openapi import ListOf, documented
from app.services import representation as rep
from app.services import transfers

bp = Blueprint("transfers", __name__)
TRANSFERS = ListOf("transfer", ("status", "reference"), tuple(sorted(transfers.STATUSES)))


@bp.post("/v1/transfers")
@documented("Move money between two accounts", body="transfer_create", answers="transfer", status=201)
def create_transfer():
    return create("transfer_create",
                  lambda s, body: (201, rep.transfer(transfers.create_transfer(s, g.merchant, body))))


@bp.get("/v1/transfers")
@documented("List transfers", answers=TRANSFERS)
def list_transfers():
    def fetch(s, query):
        page = transfers.list_transfers(s, g.merchant, query)
        return [rep.transfer(t) for t in page.items], page.has_more

    return listing(fetch, "/v1/transfers", TRANSFERS.filters, TRANSFERS.statuses)


@bp.get("/v1/transfers/<transfer_id>")
@documented("Retrieve a transfer", answers="transfer")
def get_transfer(transfer_id):
    return read(lambda s: rep.transfer(transfers.get_transfer(s, g.merchant, transfer_id)))
