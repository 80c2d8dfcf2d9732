"""What every /v1 view shares: authentication, the request's session, idempotent POSTs, lists."""
from __future__ import annotations

import json
from collections.abc import Collection
from typing import Callable

from flask import Response, g, request
from sqlalchemy.orm import Session

from app import context
from app.adapters import crypto
from app.adapters.db import read_only, unit_of_work
from app.domain.errors import ServiceUnavailable
from app.entrypoints.api import errors
from app.services import idempotency, switches
from app.services.listing import ListQuery
from app.services.merchants import MerchantScope, authenticate
from app.services.validation import list_params, parse_body

JSON = "application/json"


def authenticate_request() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    merchant, key = authenticate(secret.strip() if scheme.lower() == "bearer" else None)
    g.merchant, g.api_key = MerchantScope.of(merchant, key), key
    context.merchant_id_var.set(merchant.id)


def refuse_writes_if_read_only() -> None:
    """Read-only mode (an ops switch): every write answers 503; reads keep working."""
    if switches.is_on("read_only"):
        raise ServiceUnavailable("PayRouter is in read-only mode; retry later.", code="read_only",
                                 retry_after=switches.RETRY_AFTER_SECONDS)


def json_response(status: int, raw: bytes, replayed: bool = False) -> Response:
    response = Response(raw, status=status, mimetype=JSON)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def create(schema: str, execute: Callable[[Session, dict], tuple[int, dict]],
           present: Callable[[idempotency.StoredResponse], Response] | None = None,
           binds: Callable[[dict], dict] = lambda body: body, body_optional: bool = False) -> Response:
    """An idempotent POST: validate the body, then run ``execute(session, body)`` once per key.
    ``present``: how the stored response is shown, when it is not as stored (a sealed secret);
    ``binds``: what of the body the key is bound to (a credential only as a keyed digest);
    ``body_optional``: an action on an object (revoke, roll, rotate, redeliver) whose body may be
    left out (it is then ``{}``); one that is sent is checked against ``schema`` all the same."""
    key = idempotency.check_key(request.headers.get("Idempotency-Key"))
    raw = request.get_data(cache=False)
    body = {} if body_optional and not raw.strip() else parse_body(raw, schema)
    refuse_writes_if_read_only()
    stored = idempotency.run(g.merchant.id, key, request.path, in_mode(binds(body)), lambda s: execute(s, body),
                             errors.error_payload)
    if present is not None:
        return present(stored)
    return json_response(stored.status, stored.body, stored.replayed)


class SecretShownOnce:
    """The answer of a POST that shows a new secret once (an API key, a webhook endpoint's signing
    secret). It is stored for replay with the secret sealed (encrypted); the fresh answer shows it
    as made, a replay of the same Idempotency-Key shows what ``unseal(session, payload)`` gives: the
    secret while its owner lives, left out after (contract §2). ``store`` is what ``execute``
    returns, the object itself the ``present`` of ``create``."""

    def __init__(self, unseal: Callable[[Session, dict], dict]):
        self.unseal = unseal
        self.fresh: dict | None = None

    def store(self, status: int, payload: dict) -> tuple[int, dict]:
        self.fresh = payload
        return status, crypto.seal_secret(payload)

    def __call__(self, stored: idempotency.StoredResponse) -> Response:
        if stored.status >= 300:
            return json_response(stored.status, stored.body, stored.replayed)
        if not stored.replayed and self.fresh is not None:
            payload = self.fresh
        else:
            with read_only() as session:
                payload = self.unseal(session, json.loads(stored.body))
        return json_response(stored.status, idempotency.encode(payload), stored.replayed)


def in_mode(body):
    """What an Idempotency-Key is bound to, besides the path: the body, and the key's mode. A key
    is one per merchant, so a key used in one mode and then in the other is refused (422) like a
    key used with another body, instead of replaying one mode's answer to the other."""
    return {"livemode": True, "body": body} if g.merchant.livemode else body


def read(fetch: Callable[[Session], dict]) -> Response:
    with unit_of_work() as session:
        payload = fetch(session)
    return json_response(200, idempotency.encode(payload))


def listing(fetch: Callable[[Session, ListQuery], tuple[list, bool]], url: str, filters: Collection[str] = (),
            statuses: Collection[str] = ()) -> Response:
    """A list: its query checked (``filters``: those this collection takes; ``status`` one of
    ``statuses``), then ``fetch(session, query)`` answers the page and whether more follow."""
    query = list_params(request.args, filters, statuses=statuses)
    with unit_of_work() as session:
        data, has_more = fetch(session, query)
    return json_response(200, idempotency.encode({"object": "list", "url": url, "data": data, "has_more": has_more}))
