"""GET /openapi.json: an OpenAPI 3.1 document of the merchant API.

Each operation is described where its route is declared (``@documented`` on the view) and the
document is built from the app's routes, so a merchant route cannot be served undescribed.
Request bodies are the schemas the API validates with (schemas/api.schema.json), one
self-contained schema per body; responses are app/entrypoints/api/responses.py. Every operation says what
it answers on success and in the contract's error shape, so a client generated from this
document, or a fuzzer checking responses against it (tests/integration/test_fuzz.py), holds the
server to it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

from flask import Blueprint, Flask, current_app, has_app_context, jsonify

from app.entrypoints.api import responses
from app.services.validation import DEFAULT_LIMIT, MAX_LIMIT, body_schema

bp = Blueprint("openapi", __name__)


@dataclass(frozen=True)
class ListOf:
    """An answer that is the list envelope around objects of ``name`` (contract §1: Lists); ``filters``:
    those the list takes (of app.services.listing.FILTERS), ``status`` one of ``statuses``."""

    name: str
    filters: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Csv:
    """An answer that is CSV with a header row of ``columns`` (a report), not a JSON object."""

    columns: tuple[str, ...]


@dataclass(frozen=True)
class Described:
    """What a route takes and answers, as its view declares it with ``documented``."""

    summary: str
    answers: str | ListOf | Csv  # an object of responses.OBJECTS, or a list of them, or CSV
    status: int
    body: str | None  # the request body: a schema of schemas/api.schema.json
    optional_body: str | None  # a body that may be left out (checked against that schema when sent)
    idempotent: bool | None  # takes an Idempotency-Key and may be refused before money moves; None: a POST
    parameters: tuple[dict, ...] = ()  # query parameters of its own (OpenAPI parameter objects)


def documented(summary: str, *, answers: str | ListOf | Csv, status: int = 200, body: str | None = None,
               optional_body: str | None = None, idempotent: bool | None = None,
               parameters: tuple[dict, ...] | list[dict] = ()) -> Callable:
    """Declares, on a view, what its route takes and answers: the document is built from these, route by
    route (``document``), so a merchant route cannot be served without being described."""
    described = Described(summary, answers, status, body, optional_body, idempotent, tuple(parameters))

    def mark(view: Callable) -> Callable:
        view.openapi = described
        return view

    return mark


class Undescribed(LookupError):
    """A documented prefix's route whose view has no ``documented``."""


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": True,
    "description": "Required on every POST: 1–255 printable ASCII characters. The same key with the same body "
                   "replays the stored response (header Idempotent-Replayed: true); with another body → 422 "
                   "idempotency_error; while the first request with it runs → it waits, or 409. Kept 24 h.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255,
               "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$"},
}
LIST_PARAMETERS = [
    {"name": "limit", "in": "query", "description": f"1–{MAX_LIMIT}, default {DEFAULT_LIMIT}",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
    {"name": "starting_after", "in": "query", "description": "The id of the last object of the previous page",
     "schema": {"type": "string", "minLength": 3, "maxLength": 40, "pattern": "^[a-z]+_[A-Za-z0-9]+$"}},
    {"name": "ending_before", "in": "query", "description": "The id of the first object of the next page: pages "
     "backwards (newer objects); not with starting_after",
     "schema": {"type": "string", "minLength": 3, "maxLength": 40, "pattern": "^[a-z]+_[A-Za-z0-9]+$"}},
    *({"name": name, "in": "query", "description": f"Objects created {word}: RFC 3339 with Z or an offset, "
       "or Unix seconds", "schema": {"type": "string"}}
      for name, word in (("created[gte]", "at or after"), ("created[lt]", "before"))),
]
_ID_FILTER = {"type": "string", "maxLength": 40}
FILTER_PARAMETERS = {
    "status": "Only objects with this status",
    "customer": "Only objects of this customer (the customer's id)",
    "reference": "The object with this reference (the merchant's own id)",
    "order": "Only objects of this order (ord_…)",
    "channel": "Only objects routed to this channel",
    "payment": "Only refunds (or disputes) of this payment (pay_…)",
}


def _filter_parameters(answers: ListOf) -> list[dict]:
    """The query parameters of a list's filters, as validation.list_params checks them."""
    def schema(name: str) -> dict:
        if name == "status":
            return {"type": "string", "enum": list(answers.statuses)}
        if name in ("order", "payment"):
            return {**_ID_FILTER, "pattern": f"^{'ord' if name == 'order' else 'pay'}_[A-Za-z0-9]+$"}
        if name == "channel":
            return {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$"}
        return {"type": "string", "minLength": 1, "maxLength": 200}

    return [{"name": name, "in": "query", "description": FILTER_PARAMETERS[name], "schema": schema(name)}
            for name in answers.filters]
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


def _success(answers: str | ListOf | Csv) -> dict:
    if isinstance(answers, Csv):
        return {"text/csv": {"schema": {"type": "string", "description": "CSV, a header row then one row per "
                                                                         "line: " + ",".join(answers.columns)}}}
    if isinstance(answers, ListOf):
        return _json(responses.list_of(_ref(answers.name)))
    return _json(_ref(answers))


def _operation(method: str, path: str, described: Described) -> dict:
    request_id_header = {"X-Request-Id": {"schema": {"type": "string"}}}
    op: dict = {"summary": described.summary, "responses": {
        str(described.status): {"description": "OK", "headers": request_id_header,
                                 "content": _success(described.answers)},
        **{code: {"$ref": "#/components/responses/Error"} for code in ERROR_STATUSES},
        "default": {"$ref": "#/components/responses/Error"}}}
    params = [REQUEST_ID]
    if "{id}" in path:
        params.append({"name": "id", "in": "path", "required": True, "schema": {"type": "string"}})
    if described.idempotent if described.idempotent is not None else method == "post":
        params.append(IDEMPOTENCY_KEY)
        op["responses"]["402"] = {"$ref": "#/components/responses/Error"}
    if described.body:
        op["requestBody"] = {"required": True, "content": _json(_ref(described.body))}
    elif described.optional_body:
        op["requestBody"] = {"required": False, "content": _json(_ref(described.optional_body))}
    elif method == "get" and isinstance(described.answers, ListOf):
        params += LIST_PARAMETERS + _filter_parameters(described.answers)
    op["parameters"] = params + list(described.parameters)
    return op


DOCUMENTED_PREFIXES = ("/v1/",)  # the merchant API; /ops, /callbacks and the probes are not in the document


def _path(rule: str) -> str:
    """A route's path as the document writes it: every object id in a path is ``{id}``."""
    return "/".join("{id}" if part.startswith("<") else part for part in rule.split("/"))


def described_routes(app: Flask) -> Iterator[tuple[str, str, Described]]:
    """(method, path, description) of every route of ``app`` under a documented prefix, in the order
    they were declared; ``Undescribed`` for one whose view does not say what it takes and answers."""
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(DOCUMENTED_PREFIXES):
            continue
        described = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if not isinstance(described, Described):
            raise Undescribed(f"{rule.rule} ({rule.endpoint}): its view has no @documented")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method.lower(), _path(rule.rule), described


def build(app: Flask) -> dict:
    paths: dict = {}
    bodies: set[str] = set()
    for method, path, described in described_routes(app):
        paths.setdefault(path, {})[method] = _operation(method, path, described)
        bodies.update(name for name in (described.body, described.optional_body) if name)
    # One self-contained schema per body, as validation.validate checks it.
    schemas = {name: body_schema(name) for name in sorted(bodies)}
    schemas.update({name: body for name, body in responses.OBJECTS.items()})
    schemas["Error"] = responses.ERROR
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


def document(app: Flask | None = None) -> dict:
    """The document of ``app`` (default: the app serving this request, else the API's blueprints on
    their own), built once per app."""
    if app is None:
        app = current_app._get_current_object() if has_app_context() else _api_only()
    if "payrouter.openapi" not in app.extensions:
        app.extensions["payrouter.openapi"] = build(app)
    return app.extensions["payrouter.openapi"]


@cache
def _api_only() -> Flask:
    """The API's routes without a configured app (a client generator or the fuzz test reading the document)."""
    from app.entrypoints.api import blueprints

    app = Flask(__name__)
    for blueprint in blueprints():
        app.register_blueprint(blueprint)
    return app


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
