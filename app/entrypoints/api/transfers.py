"""/v1/transfers: 转账 between two accounts of the merchant."""
from flask import Blueprint, g

from app.entrypoints.api.common import create, listing, read
from app.services import representation as rep
from app.services import transfers

bp = Blueprint("transfers", __name__)


@bp.post("/v1/transfers")
def create_transfer():
    return create("transfer_create",
                  lambda s, body: (201, rep.transfer(transfers.create_transfer(s, g.merchant, body))))


@bp.get("/v1/transfers")
def list_transfers():
    def fetch(s, limit, after):
        page = transfers.list_transfers(s, g.merchant, limit, after)
        return [rep.transfer(t) for t in page.items], page.has_more

    return listing(fetch, "/v1/transfers")


@bp.get("/v1/transfers/<transfer_id>")
def get_transfer(transfer_id):
    return read(lambda s: rep.transfer(transfers.get_transfer(s, g.merchant, transfer_id)))
