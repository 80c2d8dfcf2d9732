"""Request parsing: JSON bodies checked against schemas/api.schema.json.

Floats are refused everywhere (they parse as Decimal, which no ``integer`` accepts);
unknown fields are refused with ``param`` naming them.

Bad input is a 4xx, never a 5xx, and that is decided here for every request, not per field:
a body is decoded strictly as UTF-8, numbers beyond 64 bits or with a huge exponent are
kept as ``Oversized`` by the parser's hooks, and every string, key and number of the body,
the query and the path is walked once (``parse_json``, ``screen``): a NUL, an
unpaired surrogate or an oversized number answers 400 ``parameter_invalid`` naming its
``param`` before any of it reaches a column.
"""
from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from datetime import datetime, timezone
from decimal import Decimal
from functools import cache
from urllib.parse import unquote_to_bytes

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

import schemas
from app.domain.errors import InvalidRequest
from app.domain.kinds import EVENT_TYPES, OperationKind
from app.domain.money import CURRENCY_EXPONENTS
from app.services.listing import CREATED, ListQuery

SCHEMA_PATH = schemas.path("api.schema.json")
MAX_BODY = 64 * 1024


@cache
def api_schema() -> dict:
    """schemas/api.schema.json, with the enums whose one list is the domain's filled in."""
    schema = json.loads(SCHEMA_PATH.read_text())
    defs = schema["$defs"]
    defs["currency"]["enum"] = list(CURRENCY_EXPONENTS)
    for name in ("kind", "type"):  # type: the name simulate's kind had first
        defs["simulate"]["properties"][name]["enum"] = list(OperationKind.routed())
    defs["webhook_endpoint_create"]["properties"]["enabled_events"]["items"]["enum"] = ["*", *EVENT_TYPES]
    return schema


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


def body_schema(name: str) -> dict:
    """The schema of one request body, self-contained (what the OpenAPI document shows)."""
    defs = api_schema()["$defs"]
    return _inline(defs[name], defs, (name,))


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = api_schema()
    if name not in schema["$defs"]:
        raise KeyError(name)
    return Draft202012Validator({**body_schema(name), "$defs": schema["$defs"]})


@cache
def _fast_validator(name: str) -> jsonschema_rs.Draft202012Validator:
    """The same schema compiled by jsonschema-rs: it says whether a body is valid about a hundred times
    faster than ``_validator``, which is asked only for a body it refuses, to name the error as it always
    has. They agree on what is valid (tests/unit/test_validation.py: every pattern of the schema is
    written so that Python's ``re`` and jsonschema-rs's regex engine read it alike), provided every
    number of the body is an integer: jsonschema-rs takes a ``Decimal`` like ``100.0`` for an integer,
    so a body with one goes to ``_validator`` alone."""
    _validator(name)  # an unknown name: the same KeyError
    return jsonschema_rs.Draft202012Validator({**body_schema(name), "$defs": api_schema()["$defs"]},
                                              validate_formats=False)


MAX_DEPTH = 32  # nesting of a body: ours go four deep
INT64 = 2**63 - 1
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")  # NUL (no text column takes it) and unpaired surrogates
_OBJECT_ID = re.compile(r"[a-z]+_[A-Za-z0-9]+")  # as $defs.object_id
_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?([0-9]+))?")


class Oversized:
    """A JSON number beyond 64 bits, with a huge exponent or too many digits, as written: the walk refuses
    it with its param (no arithmetic is done on it: ``Decimal("1e99999999999999999999")`` itself raises)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _reject_constant(name: str):
    raise InvalidRequest(f"{name} is not valid JSON", code="invalid_json")


def _parse_int(text: str):
    if len(text) > 20:  # 20 characters hold every 64-bit integer; int() of thousands of digits is slow
        return Oversized(text)
    value = int(text)
    return value if -INT64 - 1 <= value <= INT64 else Oversized(text)


def _parse_float(text: str):
    match = _JSON_NUMBER.fullmatch(text)
    if match is None or (match.group(4) and len(match.group(4).lstrip("0")) > 3) or len(text) > 40:
        return Oversized(text)
    value = Decimal(text)
    return value if value.is_finite() and value.adjusted() <= 18 else Oversized(text)


def bad_text(value: str) -> str | None:
    """Why a string cannot be stored as text, or None."""
    found = _BAD_TEXT.search(value)
    if found is None:
        return None
    return "a NUL character" if found.group() == "\x00" else "an unpaired surrogate"


def refuse_bad_text(value: str, param: str | None) -> None:
    problem = bad_text(value)
    if problem:
        raise InvalidRequest(f"{param or 'body'}: contains {problem}", param=param, code="parameter_invalid")


def _walk(body: object) -> bool:
    """Every key, string and number of a parsed body, without recursion (a deep body cannot overflow).
    True if no number in it is a ``Decimal`` (a JSON number with a fraction or an exponent)."""
    integers_only = True
    stack: list[tuple[object, tuple, int]] = [(body, (), 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"request body is nested deeper than {MAX_DEPTH} levels", code="invalid_json")
        if isinstance(node, dict):
            for key, value in node.items():
                if bad_text(key):  # named escaped: the key itself cannot be echoed
                    refuse_bad_text(key, _param(path + (key.encode("unicode_escape", "backslashreplace").decode(),)))
                stack.append((value, path + (key,), depth + 1))
        elif isinstance(node, list):
            stack.extend((value, path + (index,), depth + 1) for index, value in enumerate(node))
        elif isinstance(node, Oversized):
            param = _param(path)
            shown = node.text if len(node.text) <= 24 else node.text[:24] + "…"
            raise InvalidRequest(f"{param or 'body'}: {shown} is beyond the 64-bit range, or has a huge exponent "
                                 "or too many digits", param=param, code="parameter_invalid")
        elif isinstance(node, str):
            refuse_bad_text(node, _param(path))
        elif isinstance(node, Decimal):
            integers_only = False
    return integers_only


def parse_json(raw: bytes) -> object:
    """A request body: strict UTF-8, JSON with no NaN or Infinity, every string and number checked."""
    return _parse_json(raw)[0]


def _parse_json(raw: bytes) -> tuple[object, bool]:
    """``parse_json``'s body, and whether every number in it is an integer."""
    if len(raw) > MAX_BODY:
        raise InvalidRequest("request body is too large", code="body_too_large")
    if not raw.strip():
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"request body is not valid UTF-8 (byte {exc.start})", code="invalid_json") from None
    try:
        body = json.loads(text, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}", code="invalid_json") from None
    return body, _walk(body)


def _path_param(name: str) -> str:
    return "id" if name.endswith("id") else name  # the documents name every object id in a path {id}


def raw_path(environ: dict) -> bytes:
    """The request's path as the client sent its bytes: the raw request target where the server keeps it
    (the development server's PATH_INFO has already replaced bytes that are not UTF-8), else PATH_INFO."""
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if target and target.startswith("/"):
        return unquote_to_bytes(target.split("?", 1)[0])
    return environ.get("PATH_INFO", "").encode("latin-1", "replace")


def screen(path: bytes, query_string: bytes, view_args: dict | None) -> None:
    """A request's path and query as its body: strict UTF-8, no NUL, no unpaired surrogate.

    The router decoded the path leniently (a bad byte became U+FFFD), so a bad path segment is
    matched to its view argument to name it."""
    view_args = view_args or {}
    for raw in path.split(b"/"):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            lenient = raw.decode("utf-8", "replace")
            names = [name for name, value in view_args.items() if value == lenient]
            param = _path_param(names[0]) if names else "path"
            raise InvalidRequest(f"{param}: not valid UTF-8", param=param, code="parameter_invalid") from None
    for name, value in view_args.items():
        if isinstance(value, str):
            refuse_bad_text(value, _path_param(name))
    for part in query_string.split(b"&"):
        name, _, value = part.partition(b"=")
        name_text = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")
        param = name_text.encode("unicode_escape", "backslashreplace").decode() if bad_text(name_text) else name_text
        for component in (name, value):
            try:
                text = unquote_to_bytes(component.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"{param}: not valid UTF-8", param=param, code="parameter_invalid") from None
            refuse_bad_text(text, param)


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
    if isinstance(error.schema, dict) and error.schema.get("writeOnly"):  # a secret (a card token): never quoted
        wanted = (f"a string matching {error.validator_value}" if error.validator == "pattern"
                  else f"{error.validator} {error.validator_value}")
        return InvalidRequest(f"{param}: expected {wanted} (the value is not quoted)", param=param,
                              code="parameter_invalid")
    if error.validator == "type" and isinstance(error.instance, Decimal):
        message = f"{param}: {error.instance} is not an integer (amounts are integers in minor units)"
    elif error.validator == "enum":
        shown = ", ".join(map(str, error.validator_value[:12]))
        message = (f"{param}: {_shown(error.instance)} is not one of: "
                   f"{shown}{' …' if len(error.validator_value) > 12 else ''}")
    else:  # jsonschema's message quotes the whole value: a 50-key object or a long string, shortened
        message = f"{param or 'body'}: {error.message.replace(repr(error.instance), _shown(error.instance), 1)}"
    return InvalidRequest(message, param=param, code="parameter_invalid")


SHOWN_CHARS = 60


def _shown(value: object) -> str:
    """A refused value as an error message quotes it: at most SHOWN_CHARS of its repr."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}… ({len(text)} characters)"


def _depth(error: ValidationError) -> tuple:
    # Prefer unknown/missing field errors, then the deepest path: they say the most.
    rank = {"additionalProperties": 0, "required": 1}.get(error.validator, 2)
    return (rank, -len(error.absolute_path))


def validate(name: str, body: object, *, json_integers: bool = False) -> dict:
    """``body`` checked against the schema ``name``. ``json_integers``: the caller knows the body holds
    nothing but what JSON parses to, with every number an integer (``parse_body``): then a valid body
    is told by ``_fast_validator``, and only one it refuses goes to ``_validator``."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    if not (json_integers and _fast_validator(name).is_valid(body)):
        errors = list(_validator(name).iter_errors(body))
        if errors:
            raise _to_error(sorted(errors, key=_depth)[0])
    _check_method(body.get("payment_method"))
    return body


BUILTIN_METHODS = frozenset({"card", "wallet", "bank_transfer", "balance"})


def _check_method(instrument: object) -> None:
    """``payment_method.type``: a built-in method, or one a configured channel declares (``upi``,
    ``pix``…; the channels of this process, rebuilt within 2 s of a change)."""
    method = instrument.get("type") if isinstance(instrument, dict) else None
    if method is None or method in BUILTIN_METHODS:
        return
    from app.adapters.channels_runtime import registry

    known = registry().methods()
    if method not in known:
        shown = ", ".join(sorted(BUILTIN_METHODS | known))
        raise InvalidRequest(f"payment_method[type]: {_shown(method)} is not a method any channel takes "
                             f"(known: {shown})", param="payment_method[type]", code="parameter_invalid")


def parse_body(raw: bytes, name: str) -> dict:
    body, integers_only = _parse_json(raw)
    return validate(name, body, json_integers=integers_only)


MAX_LIMIT = 100  # lists take limit 1–100, default 10 (contract §1: Lists)
DEFAULT_LIMIT = 10


def refuse_unknown(names: Iterable[str], allowed: Collection[str]) -> None:
    """A query (or a body checked by hand) naming a parameter not in ``allowed``: 400 naming the first, in order."""
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise InvalidRequest(f"Received unknown parameter: {unknown[0]}", param=unknown[0], code="parameter_unknown")


def query_params(args, allowed: Collection[str], *, default_limit: int | None = None) -> int | None:
    """The one check of a query string: no parameter but ``allowed`` (and ``limit`` when the query takes
    one: ``default_limit`` given), none given twice, and ``limit`` an integer from 1 to MAX_LIMIT.
    Answers the limit."""
    refuse_unknown(args, {*allowed, "limit"} if default_limit is not None else allowed)
    values = getattr(args, "getlist", lambda name: [args[name]])  # a request's MultiDict, or a plain dict
    for name in sorted(args):  # each takes one value: a second one would be dropped unseen (status=a&status=b)
        if len(values(name)) > 1:
            raise InvalidRequest(f"{name} is given more than once; it takes one value", param=name)
    if default_limit is None:
        return None
    raw = args.get("limit", str(default_limit))
    if not (raw.isascii() and raw.isdecimal()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}", param="limit")
    return int(raw)


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
_CHANNEL_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")
MAX_UNIX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


def moment(raw: str, param: str) -> datetime:
    """A point in time from a query: RFC 3339 with an offset, or Unix seconds; naive UTC (as stored)."""
    if raw.isascii() and raw.isdecimal() and len(raw) <= 12 and int(raw) <= MAX_UNIX_SECONDS:
        return datetime.fromtimestamp(int(raw), timezone.utc).replace(tzinfo=None)
    if _RFC3339.fullmatch(raw):
        text = raw.upper().replace(" ", "T").replace("Z", "+00:00")
        whole, dot, rest = text.partition(".")
        if dot:  # fromisoformat takes at most microseconds
            digits = re.match(r"\d+", rest).group()
            text = f"{whole}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
        try:
            return datetime.fromisoformat(text).astimezone(timezone.utc).replace(tzinfo=None)
        except (ValueError, OverflowError):
            pass
    raise InvalidRequest(f"{param}: {_shown(raw)} is neither an RFC 3339 date-time (with Z or an offset) "
                         "nor Unix seconds", param=param, code="parameter_invalid")


def _filter_value(name: str, raw: str, statuses: Collection[str]) -> str:
    """A filter's value, checked: a bad one is 400 parameter_invalid naming the filter."""
    if name == "status":
        ok, expected = raw in statuses, f"one of: {', '.join(sorted(statuses))}"
    elif name in ("order", "payment"):
        prefix = {"order": "ord_", "payment": "pay_"}[name]
        ok, expected = raw.startswith(prefix) and len(raw) <= 40 and bool(_OBJECT_ID.fullmatch(raw)), \
            f"a {name} id ({prefix}…)"
    elif name == "channel":
        ok, expected = bool(_CHANNEL_ID.fullmatch(raw)), "a channel id"
    else:  # customer, reference: the merchant's own ids, 1–200 characters as in the bodies
        ok, expected = 1 <= len(raw) <= 200, "1 to 200 characters"
    if not ok:
        raise InvalidRequest(f"{name}: {_shown(raw)} is not {expected}", param=name, code="parameter_invalid")
    return raw


def _cursor(args, name: str) -> str | None:
    value = args.get(name) or None
    if value is not None and not (len(value) <= 40 and _OBJECT_ID.fullmatch(value)):
        raise InvalidRequest(f"{name} is not a valid id", param=name, code="parameter_invalid")
    return value


def list_params(args, filters: Collection[str] = (), *, statuses: Collection[str] = (),
                extra: Collection[str] = ()) -> ListQuery:
    """A list's query string, checked: ``limit`` (1–100, default 10), one cursor (``starting_after``
    or ``ending_before``), ``created[gte]`` and ``created[lt]``, and the ``filters`` (of
    app.services.listing.FILTERS) this collection takes; ``status`` one of ``statuses``. ``extra``:
    parameters the view reads itself. Any other parameter is refused, naming it."""
    limit = query_params(args, {"starting_after", "ending_before", *CREATED, *filters, *extra},
                         default_limit=DEFAULT_LIMIT)
    after, before = _cursor(args, "starting_after"), _cursor(args, "ending_before")
    if after and before:
        raise InvalidRequest("starting_after and ending_before cannot be used together", param="ending_before",
                             code="parameter_invalid")
    gte = moment(args["created[gte]"], "created[gte]") if "created[gte]" in args else None
    lt = moment(args["created[lt]"], "created[lt]") if "created[lt]" in args else None
    return ListQuery(limit=limit, starting_after=after, ending_before=before, created_gte=gte, created_lt=lt,
                     filters={name: _filter_value(name, args[name], statuses) for name in filters if name in args})
