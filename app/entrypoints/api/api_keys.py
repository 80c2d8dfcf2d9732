"""/v1/api_keys: the merchant's own secret keys, managed with a key of the same mode."""
from __future__ import annotations

from flask import Blueprint, g

from app.entrypoints.api.common import (
    SecretShownOnce,
    create,
    listing,
    read,
)
from app.entrypoints.api.openapi import ListOf, documented
from app.services import merchants

bp = Blueprint("api_keys", __name__)


def _unseal(session, payload: dict) -> dict:
    return merchants.unseal_secret(session, g.merchant, payload)  # only the key's hash is kept anywhere else



@bp.post(merchants.KEY_CREATE_PATH)
@documented("Create a secret key of this key's mode (the secret is shown once)", body="api_key_create",
            answers="api_key", status=201)
def create_key():
    shows = SecretShownOnce(_unseal)

    def execute(session, body):
        issued = merchants.create_key(session, g.merchant, body.get("expires_at"))
        return shows.store(201, merchants.key_representation(issued.key, issued.secret))

    return create("api_key_create", execute, present=shows)


@bp.get("/v1/api_keys")
@documented("List the secret keys of this key's mode (prefixes, created, last used)", answers=ListOf("api_key"))
def list_keys():
    def fetch(session, query):
        result = merchants.list_keys(session, g.merchant, query)
        return [merchants.key_representation(key) for key in result.items], result.has_more

    return listing(fetch, "/v1/api_keys")


@bp.get("/v1/api_keys/<key_id>")
@documented("Retrieve a secret key (its prefix, never the secret)", answers="api_key")
def get_key(key_id):
    return read(lambda s: merchants.key_representation(merchants.get_key(s, g.merchant, key_id)))


@bp.post("/v1/api_keys/<key_id>/revoke")
@documented("Revoke a secret key: refused at once by every process; never the last live key (409)",
            optional_body="api_key_revoke", answers="api_key")
def revoke_key(key_id):
    return create("api_key_revoke", lambda s, _body: (
        200, merchants.key_representation(merchants.revoke_merchant_key(s, g.merchant, key_id))), body_optional=True)


@bp.post(merchants.KEY_ROLL_PATH.format("<key_id>"))
@documented("Replace a secret key with a new one (shown once); the old one stays valid for overlap_seconds",
            optional_body="api_key_roll", answers="api_key")
def roll_key(key_id):
    shows = SecretShownOnce(_unseal)

    def execute(session, body):
        issued = merchants.roll_key(session, g.merchant, key_id, body.get("overlap_seconds", 0))
        return shows.store(200, merchants.key_representation(issued.key, issued.secret))

    return create("api_key_roll", execute, shows, body_optional=True)
