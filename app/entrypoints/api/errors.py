"""The one table from error class to (HTTP status, contract type), and the Flask handlers."""
from __future__ import annotations

import logging

import psycopg
from flask import Flask, jsonify
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from app import context
from app.domain import errors as e
from app.entrypoints import http_refusals

log = logging.getLogger("payrouter.api")

# Most specific first: the first class an error is an instance of decides.
ERROR_MAP: list[tuple[type[e.PayRouterError], int, str]] = [
    (e.NotFound, 404, "invalid_request_error"),
    (e.Unprocessable, 422, "invalid_request_error"),
    (e.InvalidRequest, 400, "invalid_request_error"),
    (e.Conflict, 409, "invalid_request_error"),
    (e.AuthenticationFailed, 401, "authentication_error"),
    (e.PermissionDenied, 403, "permission_error"),
    (e.IdempotencyMismatch, 422, "idempotency_error"),
    (e.IdempotencyInFlight, 409, "idempotency_error"),
    (e.RateLimited, 429, "rate_limit_error"),
    (e.PaymentDeclined, 402, "payment_declined"),
    (e.ServiceUnavailable, 503, "api_error"),
    (e.ChannelError, 502, "api_error"),
    (e.PayRouterError, 500, "api_error"),
]

# Faults of the database itself (unreachable, restarting, its pool exhausted), as SQLAlchemy or the
# driver raise them: the client may retry, so 503 with Retry-After, never a bare 500.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (sa_exc.OperationalError, sa_exc.TimeoutError,
                                                    sa_exc.DisconnectionError, psycopg.OperationalError)


def database_unavailable(error: Exception) -> e.ServiceUnavailable | None:
    """The 503 a database fault answers, or None for any other error."""
    if isinstance(error, DATABASE_UNAVAILABLE) or (isinstance(error, sa_exc.DBAPIError)
                                                   and error.connection_invalidated):
        return e.ServiceUnavailable("The database is unreachable right now; retry later.")
    return None


def status_and_type(error: e.PayRouterError) -> tuple[int, str]:
    for cls, status, kind in ERROR_MAP:
        if isinstance(error, cls):
            return status, kind
    return 500, "api_error"


def error_body(kind: str, code: str, message: str, param: str | None = None, **extra) -> dict:
    body = {"type": kind, "code": code or "error", "message": message, "request_id": context.current_request_id()}
    if param:
        body["param"] = param
    body.update(extra)
    return {"error": body}


def error_payload(error: e.PayRouterError) -> tuple[int, dict]:
    """The HTTP status and contract body of a deliberate error (a refusal carries its ``decision``)."""
    status, kind = status_and_type(error)
    extra = {k: v for k, v in error.extra.items() if k == "decision"}
    return status, error_body(kind, error.code, error.message, error.param, **extra)


def to_response(error: e.PayRouterError):
    status, payload = error_payload(error)
    response = jsonify(payload)
    response.status_code = status
    if status in (429, 503):  # seconds: what the error says (a rate limit's window, a switch), else 1
        response.headers["Retry-After"] = str(error.extra.get("retry_after") or 1)
    return response


def register(app: Flask) -> None:
    @app.errorhandler(e.PayRouterError)
    def _domain(error):
        if status_and_type(error)[0] >= 500:
            log.error("request failed: %s", error, exc_info=error)
        return to_response(error)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        codes = {404: "resource_missing", 405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media"}
        kind = "invalid_request_error" if error.code < 500 else "api_error"
        response = jsonify(error_body(kind, codes.get(error.code, "http_error"), error.description or error.name))
        response.status_code = error.code
        for name, value in error.get_headers():  # a 405's Allow, as HTTP requires
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(http_refusals.ParseError)
    def _unreadable_body(error):
        # The server found the body malformed as a route read it (a bad chunk): the client's fault, a 4xx.
        answer = http_refusals.refusal(error)
        if answer is None or answer is http_refusals.INTERNAL:
            return _unexpected(error)
        log.warning("request body unreadable: %s", error)
        response = jsonify(error_body(answer.kind, answer.code, answer.message))
        response.status_code = answer.status
        return response

    @app.errorhandler(Exception)
    def _unexpected(error):
        unavailable = database_unavailable(error)
        if unavailable is not None:
            log.error("request failed, database unavailable: %s", error)
            return to_response(unavailable)
        log.exception("unhandled error")
        response = jsonify(error_body("api_error", "internal_error", "An internal error occurred."))
        response.status_code = 500
        return response
