"""/v1/channel_accounts: a merchant's own credentials for a channel (contract §4), never shown again."""
from __future__ import annotations

from flask import Blueprint, g

from app.adapters.db import unit_of_work
from app.entrypoints.api.common import create, json_response, listing, read, refuse_writes_if_read_only
from app.entrypoints.api.openapi import ListOf, documented
from app.services import channel_accounts as service
from app.services import idempotency

bp = Blueprint("channel_accounts", __name__)


@bp.post("/v1/channel_accounts")
@documented("Bring the merchant's own credentials for a channel (stored encrypted, never shown again)",
            body="channel_account_create", answers="channel_account", status=201)
def create_account():
    def execute(session, body):
        return 201, service.representation(service.create(session, g.merchant.id, g.merchant.livemode, body))

    return create("channel_account_create", execute, binds=service.idempotency_body)


@bp.get("/v1/channel_accounts")
@documented("List channel accounts", answers=ListOf("channel_account"))
def list_accounts():
    def fetch(session, query):
        result = service.list_accounts(session, g.merchant.id, g.merchant.livemode, query)
        return [service.representation(a) for a in result.items], result.has_more

    return listing(fetch, "/v1/channel_accounts", filters=("channel",))


@bp.get("/v1/channel_accounts/<account_id>")
@documented("Retrieve a channel account (without its credentials)", answers="channel_account")
def get_account(account_id):
    return read(lambda s: service.representation(service.get(s, g.merchant.id, g.merchant.livemode, account_id)))


@bp.delete("/v1/channel_accounts/<account_id>")
@documented("Delete a channel account: new operations use the platform's credentials again",
            answers="deleted_channel_account")
def delete_account(account_id):
    refuse_writes_if_read_only()
    with unit_of_work() as session:
        payload = service.delete(session, g.merchant.id, g.merchant.livemode, account_id)
    return json_response(200, idempotency.encode(payload))
