"""GET /openapi.json: an OpenAPI 3.1 document built from the same schemas the API validates with."""
from __future__ import annotations

from functools import cache

from flask import Blueprint, jsonify

from app.api.validation import api_schema

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

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["type", "code", "message", "request_id"],
        "properties": {k: {"type": "string"} for k in ("type", "code", "message", "param", "request_id")},
    }},
}


@cache
def document() -> dict:
    schemas = {name: _rewrite(body) for name, body in api_schema()["$defs"].items()}
    schemas["Error"] = ERROR_SCHEMA
    paths: dict = {}
    for method, path, schema, summary, status in OPERATIONS + EXTRA_OPERATIONS:
        op: dict = {"summary": summary, "responses": {
            status: {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
            "default": {"description": "Error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}}}
        params = [{"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"}}]
        if "{id}" in path:
            params.append({"name": "id", "in": "path", "required": True, "schema": {"type": "string"}})
        if method == "post" and path != "/v1/routing/simulate":
            params.append({"name": "Idempotency-Key", "in": "header", "required": True,
                           "schema": {"type": "string", "maxLength": 255}})
        if schema:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{schema}"}}}}
        elif method == "get" and "{id}" not in path.rsplit("/", 1)[-1]:
            params += [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                       {"name": "starting_after", "in": "query", "schema": {"type": "string"}}]
        op["parameters"] = params
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "PayRouter API", "version": "1"},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _rewrite(node):
    """Point $refs at components/schemas instead of the source file's $defs."""
    if isinstance(node, dict):
        return {k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else _rewrite(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
