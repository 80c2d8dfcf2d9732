"""GET /openapi.json: an OpenAPI 3.1 document of the merchant API.

Request bodies are the schemas the API validates with (schemas/api.schema.json), one
self-contained schema per body; responses are app/entrypoints/api/responses.py. Every operation says what
it answers on success and in the contract's error shape, so a client generated from this
document, or a fuzzer checking responses against it (tests/integration/test_fuzz.py), holds the
server to it.
"""
from __future__ import annotations

from functools import cache

from flask import Blueprint, jsonify

from app.entrypoints.api import responses
from app.services.validation import body_schema

bp = Blueprint("openapi", __name__)

# (method, path, request schema or None, summary, success status)
OPERATIONS = [
    ("post", "/v1/accounts", "account_create", "Create a stored-value account", "201"),
    ("get", "/v1/accounts", None, "List accounts", "200"),
    ("get", "/v1/accounts/{id}", None, "Retrieve an account", "200"),
    ("get", "/v1/accounts/{id}/entries", None, "List an account's ledger lines", "200"),
    ("post", "/v1/transfers", "transfer_create", "Move money between two accounts", "201"),
    ("get", "/v1/transfers", None, "List transfers", "200"),
    ("get", "/v1/transfers/{id}", None, "Retrieve a transfer", "200"),
    ("get", "/v1/events", None, "List events", "200"),
    ("get", "/v1/events/{id}", None, "Retrieve an event", "200"),
    ("post", "/v1/test_helpers/accounts/{id}/fund", "test_funding", "Test mode: credit an account", "200"),
]
EXTRA_OPERATIONS: list[tuple] = []  # later resources append here at import time

# What each operation answers on success: an object's name in responses.OBJECTS, or ("list", name).
RESPONSES: dict[tuple[str, str], str | tuple[str, str]] = {
    ("post", "/v1/accounts"): "account",
    ("get", "/v1/accounts"): ("list", "account"),
    ("get", "/v1/accounts/{id}"): "account",
    ("get", "/v1/accounts/{id}/entries"): ("list", "ledger_entry"),
    ("post", "/v1/test_helpers/accounts/{id}/fund"): "account",
    ("post", "/v1/transfers"): "transfer",
    ("get", "/v1/transfers"): ("list", "transfer"),
    ("get", "/v1/transfers/{id}"): "transfer",
    ("get", "/v1/events"): ("list", "event"),
    ("get", "/v1/events/{id}"): "event",
    ("get", "/v1/events/{id}/deliveries"): ("list", "webhook_delivery"),
    ("post", "/v1/events/{id}/redeliver"): ("list", "webhook_delivery"),
    ("post", "/v1/routing/simulate"): "routing_decision",
    ("post", "/v1/webhook_endpoints"): "webhook_endpoint",
    ("get", "/v1/webhook_endpoints"): ("list", "webhook_endpoint"),
    ("get", "/v1/webhook_endpoints/{id}"): "webhook_endpoint",
    ("delete", "/v1/webhook_endpoints/{id}"): "deleted_webhook_endpoint",
    ("post", "/v1/webhook_endpoints/{id}/rotate_secret"): "webhook_endpoint",
    ("get", "/v1/webhook_endpoints/{id}/deliveries"): ("list", "webhook_delivery"),
}

for _collection, _kind in (("payments", "payment"), ("topups", "topup"), ("withdrawals", "withdrawal"),
                          ("refunds", "refund")):
    RESPONSES.update({("post", f"/v1/{_collection}"): _kind, ("get", f"/v1/{_collection}"): ("list", _kind),
                      ("get", f"/v1/{_collection}/{{id}}"): _kind})

# POSTs whose body is optional and checked field by field in their view (app/entrypoints/api/webhooks.py).
OPTIONAL_BODIES = {("post", "/v1/webhook_endpoints/{id}/rotate_secret"): "webhook_secret_rotation",
                   ("post", "/v1/events/{id}/redeliver"): "event_redelivery"}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": True,
    "description": "Required on every POST: 1–255 printable ASCII characters. The same key with the same body "
                   "replays the stored response (header Idempotent-Replayed: true); with another body → 422 "
                   "idempotency_error; while the first request with it runs → it waits, or 409. Kept 24 h.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255,
               "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$"},
}
LIST_PARAMETERS = [
    {"name": "limit", "in": "query", "description": "1–100, default 10",
     "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {"name": "starting_after", "in": "query", "description": "The id of the last object of the previous page",
     "schema": {"type": "string", "minLength": 3, "maxLength": 40, "pattern": "^[a-z]+_[A-Za-z0-9]+$"}},
]
REQUEST_ID = {"name": "X-Request-Id", "in": "header", "required": False,
              "description": "Echoed in the response; generated when absent or not 1–200 printable ASCII characters",
              "schema": {"type": "string"}}
ERROR_STATUSES = {
    "400": "Bad input: invalid_json, parameter_invalid, parameter_missing, parameter_unknown (with param)",
    "401": "No valid API key", "403": "Not allowed with this key", "404": "No such object for this merchant",
    "409": "A conflict with the object's state, or the Idempotency-Key in use",
    "422": "The Idempotency-Key used with another body, or a request whose meaning is refused",
    "429": "Rate limited (Retry-After)", "503": "Unavailable for now (Retry-After)",
}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _success(method: str, path: str) -> dict:
    shape = RESPONSES[(method, path)]  # a KeyError here: a route whose answer is not described
    if isinstance(shape, tuple):
        return responses.list_of(_ref(shape[1]))
    return _ref(shape)


def _operation(method: str, path: str, schema: str | None, summary: str, status: str) -> dict:
    request_id_header = {"X-Request-Id": {"schema": {"type": "string"}}}
    op: dict = {"summary": summary, "responses": {
        status: {"description": "OK", "headers": request_id_header, "content": _json(_success(method, path))},
        **{code: {"$ref": "#/components/responses/Error"} for code in ERROR_STATUSES},
        "default": {"$ref": "#/components/responses/Error"}}}
    params = [REQUEST_ID]
    if "{id}" in path:
        params.append({"name": "id", "in": "path", "required": True, "schema": {"type": "string"}})
    if method == "post" and path != "/v1/routing/simulate":
        params.append(IDEMPOTENCY_KEY)
        op["responses"]["402"] = {"$ref": "#/components/responses/Error"}
    if schema:
        op["requestBody"] = {"required": True, "content": _json(_ref(schema))}
    elif (method, path) in OPTIONAL_BODIES:
        op["requestBody"] = {"required": False, "content": _json(_ref(OPTIONAL_BODIES[(method, path)]))}
    elif method == "get" and isinstance(RESPONSES[(method, path)], tuple):
        params += LIST_PARAMETERS
    op["parameters"] = params
    return op


@cache
def document() -> dict:
    # Each resource module adds its operations when imported: all of them are, before the first build.
    from app.entrypoints.api import accounts, events, payments, routing, transfers, webhooks  # noqa: F401

    operations = OPERATIONS + EXTRA_OPERATIONS
    bodies = {schema for _, _, schema, _, _ in operations if schema} | set(OPTIONAL_BODIES.values())
    # One self-contained schema per body, as validation.validate checks it.
    schemas = {name: body_schema(name) for name in sorted(bodies)}
    schemas.update({name: body for name, body in responses.OBJECTS.items()})
    schemas["Error"] = responses.ERROR
    paths: dict = {}
    for method, path, schema, summary, status in operations:
        paths.setdefault(path, {})[method] = _operation(method, path, schema, summary, status)
    return {
        "openapi": "3.1.0",
        "info": {"title": "PayRouter API", "version": "1"},
        "components": {
            "schemas": schemas,
            "responses": {"Error": {"description": "The contract's error shape; " + "; ".join(
                f"{code}: {text}" for code, text in ERROR_STATUSES.items()), "content": _json(_ref("Error"))}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
