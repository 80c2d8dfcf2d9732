"""/v1/disputes: chargebacks reported by channels (read-only: the channel decides)."""
from flask import Blueprint, g

from app.entrypoints.api.common import listing, read
from app.entrypoints.api.openapi import ListOf, documented
from app.services import disputes

bp = Blueprint("disputes", __name__)
DISPUTES = ListOf("dispute", disputes.LIST_FILTERS, disputes.STATUSES)


@bp.get("/v1/disputes")
@documented("List disputes (chargebacks reported by the payments' channels)", answers=DISPUTES)
def list_disputes():
    def fetch(s, query):
        page = disputes.list_disputes(s, g.merchant, query)
        return [disputes.representation(dispute) for dispute in page.items], page.has_more

    return listing(fetch, "/v1/disputes", DISPUTES.filters, DISPUTES.statuses)


@bp.get("/v1/disputes/<dispute_id>")
@documented("Retrieve a dispute", answers="dispute")
def get_dispute(dispute_id):
    return read(lambda s: disputes.representation(disputes.get_dispute(s, g.merchant, dispute_id)))
