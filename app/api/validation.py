"""Request parsing: JSON bodies checked against schemas/api.schema.json.

Floats are refused everywhere (they parse as Decimal, which no ``integer`` accepts);
unknown fields are refused with ``param`` naming them.
"""
from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from app.domain.errors import InvalidRequest

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "api.schema.json"
MAX_BODY = 64 * 1024


@cache
def api_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _inline(node, defs: dict, seen: tuple = ()):
    """``node`` with every local ``{"$ref": "#/$defs/x"}`` replaced by a copy of ``x`` (a recursive
    definition keeps its $ref): validation then follows no references, which is most of
    jsonschema's cost on these small bodies."""
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and len(node) == 1:
        name = ref.removeprefix("#/$defs/")
        if name in defs and name not in seen:
            return _inline(defs[name], defs, seen + (name,))
        return node
    return {key: _inline(value, defs, seen) for key, value in node.items()}


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = api_schema()
    if name not in schema["$defs"]:
        raise KeyError(name)
    inlined = _inline(schema["$defs"][name], schema["$defs"], (name,))
    return Draft202012Validator({**inlined, "$defs": schema["$defs"]})


def _reject_constant(name: str):
    raise InvalidRequest(f"{name} is not valid JSON", code="invalid_json")


def parse_json(raw: bytes) -> object:
    if len(raw) > MAX_BODY:
        raise InvalidRequest("request body is too large", code="body_too_large")
    if not raw.strip():
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}", code="invalid_json") from None


def _param(path) -> str | None:
    parts = [str(p) for p in path]
    if not parts:
        return None
    head, rest = parts[0], "".join(f"[{p}]" for p in parts[1:])
    return head + rest


def _to_error(error: ValidationError) -> InvalidRequest:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        param = _param(path + extra[:1])
        return InvalidRequest(f"Received unknown parameter: {param}", param=param, code="parameter_unknown")
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        param = _param(path + missing[:1])
        return InvalidRequest(f"Missing required param: {param}", param=param, code="parameter_missing")
    param = _param(path)
    if error.validator == "type" and isinstance(error.instance, Decimal):
        message = f"{param}: {error.instance} is not an integer (amounts are integers in minor units)"
    elif error.validator == "enum":
        shown = ", ".join(map(str, error.validator_value[:12]))
        message = f"{param}: {error.instance!r} is not one of: {shown}{' …' if len(error.validator_value) > 12 else ''}"
    else:
        message = f"{param or 'body'}: {error.message}"
    return InvalidRequest(message, param=param, code="parameter_invalid")


def _depth(error: ValidationError) -> tuple:
    # Prefer unknown/missing field errors, then the deepest path: they say the most.
    rank = {"additionalProperties": 0, "required": 1}.get(error.validator, 2)
    return (rank, -len(error.absolute_path))


def validate(name: str, body: object) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    errors = list(_validator(name).iter_errors(body))
    if errors:
        raise _to_error(sorted(errors, key=_depth)[0])
    return body


def parse_body(raw: bytes, name: str) -> dict:
    return validate(name, parse_json(raw))


def list_params(args) -> tuple[int, str | None]:
    """``limit`` (1–100, default 10) and ``starting_after`` from a query string."""
    unknown = sorted(set(args) - {"limit", "starting_after"})
    if unknown:
        raise InvalidRequest(f"Received unknown parameter: {unknown[0]}", param=unknown[0], code="parameter_unknown")
    raw = args.get("limit", "10")
    if not (raw.isascii() and raw.isdecimal()) or not 1 <= int(raw) <= 100:
        raise InvalidRequest("limit must be an integer from 1 to 100", param="limit")
    after = args.get("starting_after") or None
    if after is not None and len(after) > 40:
        raise InvalidRequest("starting_after is not a valid id", param="starting_after")
    return int(raw), after
