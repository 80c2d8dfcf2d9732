"""What the merchant API answers, as JSON Schema for the OpenAPI document (and the fuzz test that
checks every response against it).

Strict where the contract is (ids, integer money, statuses, the error shape), open to fields
being added (no ``additionalProperties: false`` on an object we answer with): a client reading
a response must ignore what it does not know, and so does this description.
"""
from __future__ import annotations

OPERATION_STATUSES = ["pending", "processing", "succeeded", "failed", "requires_action", "requires_capture",
                      "canceled"]


def _null(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(required: dict, optional: dict | None = None) -> dict:
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}


def _id(prefix: str) -> dict:
    return {"type": "string", "pattern": f"^{prefix}_[A-Za-z0-9]+$", "maxLength": 40}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$"}
METADATA = {"type": "object", "additionalProperties": {"type": "string"}}
CUSTOMER = _null(_obj({"id": STRING}, {"country": STRING, "email": STRING}))


def _object(kind: str, prefix: str, required: dict, optional: dict | None = None) -> dict:
    """An object we answer with: its id and kind, and its mode (contract §1: every object carries livemode)."""
    head = {"id": _id(prefix), "object": {"const": kind}, "livemode": BOOLEAN}
    return _obj({**head, **required}, optional)


ROUTING = _obj({}, {
    "ruleset_version": _null(INTEGER), "merchant_ruleset_version": INTEGER,
    "matched_rules": {"type": "array", "items": STRING},
    "candidates": {"type": "array", "items": STRING}, "channel": _null(STRING),
    "dropped": {"type": "array", "items": _obj({"channel": STRING, "reason": STRING})},
    "strategy": STRING, "scores": {"type": "object"}, "strategy_fallback": STRING, "exploration": BOOLEAN})
ATTEMPT = _obj({"channel": STRING, "status": STRING}, {"error_code": STRING})


def _operation(kind: str, prefix: str, specific: dict) -> dict:
    return _object(kind, prefix, {
        "created_at": TIME, "status": {"enum": OPERATION_STATUSES}, "amount": {"type": "integer", "minimum": 1},
        "currency": CURRENCY, "fee": {"type": "integer", "minimum": 0}, "reference": STRING, "metadata": METADATA,
        "customer": CUSTOMER, "routing": ROUTING, "attempts": {"type": "array", "items": ATTEMPT},
        "failure_code": _null(STRING), "failure_message": _null(STRING), "review": BOOLEAN, **specific})


OBJECTS: dict[str, dict] = {
    "account": _object("account", "acct", {
        "created_at": TIME, "currency": CURRENCY, "customer": CUSTOMER, "reference": _null(STRING),
        "metadata": METADATA, "balance": _obj({"available": INTEGER, "pending": INTEGER})}),
    "ledger_entry": _object("ledger_entry", "ln", {
        "created_at": TIME, "account": _id("acct"), "journal_entry": _id("je"), "amount": INTEGER,
        "currency": CURRENCY, "balance_type": {"enum": ["available", "pending"]}, "kind": _null(STRING),
        "source": _null(STRING)}),
    "transfer": _object("transfer", "tr", {
        "created_at": TIME, "from_account": _id("acct"), "to_account": _id("acct"),
        "amount": {"type": "integer", "minimum": 1}, "currency": CURRENCY, "status": {"enum": ["succeeded"]},
        "reference": STRING, "metadata": METADATA}),
    "payment": _operation("payment", "pay", {
        "payment_method": _obj({"type": STRING}), "description": _null(STRING),
        "amount_refunded": {"type": "integer", "minimum": 0}, "order": _null(_id("ord")),
        "capture_method": {"enum": ["automatic", "manual"]}, "amount_captured": {"type": "integer", "minimum": 0},
        "next_action": _null(_obj({"type": {"enum": ["redirect_to_url"]}, "url": STRING}))}),
    "topup": _operation("topup", "top", {"account": _id("acct"), "payment_method": _obj({"type": STRING})}),
    "withdrawal": _operation("withdrawal", "wd", {"account": _id("acct"), "destination": _obj({"type": STRING})}),
    "refund": _operation("refund", "re", {"payment": _id("pay"), "reason": _null(STRING), "order": _null(_id("ord"))}),
    "order": _object("order", "ord", {
        "created_at": TIME, "amount": {"type": "integer", "minimum": 1}, "currency": CURRENCY, "reference": STRING,
        "customer": CUSTOMER, "description": _null(STRING), "metadata": METADATA,
        "status": {"enum": ["open", "paid", "partially_refunded", "refunded"]},
        "amount_paid": {"type": "integer", "minimum": 0}, "amount_refunded": {"type": "integer", "minimum": 0},
        "payments": {"type": "array", "items": _id("pay")}, "refunds": {"type": "array", "items": _id("re")}}),
    "dispute": _object("dispute", "dp", {
        "created_at": TIME, "payment": _id("pay"), "amount": {"type": "integer", "minimum": 1}, "currency": CURRENCY,
        "reason": STRING, "status": {"enum": ["needs_response", "won", "lost"]}, "closed_at": _null(TIME)}),
    "event": _object("event", "evt", {
        "type": STRING, "created_at": TIME, "request_id": _null(STRING), "data": _obj({"object": {"type": "object"}})}),
    "webhook_endpoint": _object("webhook_endpoint", "we", {
        "created_at": TIME, "url": STRING, "enabled_events": {"type": "array", "items": STRING},
        "description": _null(STRING), "metadata": METADATA, "status": STRING,
        "previous_secret_expires_at": _null(TIME)},
        {"secret": {"type": "string", "pattern": "^whsec_"}}),
    "deleted_webhook_endpoint": _obj({"id": _id("we"), "object": {"const": "webhook_endpoint"},
                                      "deleted": {"const": True}}),
    "channel_account": _object("channel_account", "mca", {
        "created_at": TIME, "channel": STRING, "credential_fields": {"type": "array", "items": STRING},
        "verified": BOOLEAN, "metadata": METADATA}),
    "deleted_channel_account": _obj({"id": _id("mca"), "object": {"const": "channel_account"},
                                     "deleted": {"const": True}}),
    "webhook_delivery": _object("webhook_delivery", "whd", {
        "created_at": TIME, "event": _id("evt"), "webhook_endpoint": _id("we"), "redelivery": BOOLEAN,
        "status": STRING, "attempt_count": INTEGER, "next_attempt_at": _null(TIME),
        "last_status_code": _null(INTEGER), "last_error": _null(STRING), "completed_at": _null(TIME),
        "request_id": _null(STRING), "attempts": {"type": "array", "items": _obj({
            "number": INTEGER, "started_at": _null(TIME), "status_code": _null(INTEGER),
            "latency_ms": _null(INTEGER), "error": _null(STRING)})}}),
    "balance": _obj({"object": {"const": "balance"}, "livemode": BOOLEAN,
                     "available": {"type": "array", "items": _obj({"currency": CURRENCY, "amount": INTEGER})},
                     "pending": {"type": "array", "items": _obj({"currency": CURRENCY, "amount": INTEGER})}}),
    "balance_transaction": _object("balance_transaction", "txn", {
        "created_at": TIME, "type": STRING, "amount": INTEGER, "fee": INTEGER, "net": INTEGER, "currency": CURRENCY,
        "source": _null(STRING), "description": _null(STRING), "journal_entry": _id("je")}),
    "api_key": _object("api_key", "key", {
        "prefix": STRING, "created_at": TIME, "last_used_at": _null(TIME), "expires_at": _null(TIME),
        "revoked_at": _null(TIME), "status": {"enum": ["active", "expired", "revoked"]}},
        {"secret": {"type": "string", "pattern": "^sk_(test|live)_"}}),
    "routing_decision": _obj({
        "object": {"const": "routing_decision"}, "outcome": {"enum": ["route", "decline"]},
        "channel": _null(STRING), "candidates": {"type": "array", "items": STRING},
        "dropped": {"type": "array", "items": _obj({"channel": STRING, "reason": STRING})},
        "matched_rules": {"type": "array", "items": STRING}, "fee": {"type": "integer", "minimum": 0},
        "limits": {"type": "object"}, "ruleset_version": _null(INTEGER)},
        {"decline_code": STRING, "merchant_ruleset_version": INTEGER, "strategy": STRING,
         "scores": {"type": "object"}, "strategy_fallback": STRING, "exploration": BOOLEAN,
         "retry": _obj({"on": {"type": "array", "items": STRING}, "max": INTEGER, "rule": STRING})}),
}

ERROR = _obj({"error": _obj(
    {"type": {"enum": ["invalid_request_error", "authentication_error", "permission_error", "idempotency_error",
                       "rate_limit_error", "payment_declined", "api_error"]},
     "code": {"type": "string", "minLength": 1}, "message": STRING, "request_id": STRING},
    {"param": STRING, "decision": {"type": "object"}})})


def list_of(ref: dict) -> dict:
    """The list envelope (contract §1: Lists)."""
    return _obj({"object": {"const": "list"}, "data": {"type": "array", "items": ref}, "has_more": BOOLEAN},
                {"url": STRING})
