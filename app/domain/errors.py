"""One error root. Every exception PayRouter raises on purpose inherits PayRouterError.

The mapping from error class to HTTP status / contract ``type`` / ``code`` is the single
table ``ERROR_MAP`` in app/entrypoints/api/errors.py.
"""
from __future__ import annotations


class PayRouterError(Exception):
    """Root of every deliberate PayRouter error."""

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None, param: str | None = None, **extra):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        if code:
            self.code = code
        self.param = param
        self.extra = extra


class InvalidRequest(PayRouterError):
    """The request is malformed or fails validation."""

    code = "parameter_invalid"


class Unprocessable(InvalidRequest):
    """The request is well formed but refused for what it means: a reference already used, an
    account of another currency, a refund beyond what was paid (422, not 400)."""


class NotFound(PayRouterError):
    """No such object for this merchant."""

    code = "resource_missing"


class Conflict(PayRouterError):
    """The request conflicts with the current state of an object."""

    code = "state_conflict"


class AuthenticationFailed(PayRouterError):
    """No valid API key was provided."""

    code = "invalid_api_key"


class PermissionDenied(PayRouterError):
    """The credentials are valid but not allowed to do this."""

    code = "forbidden"


class IdempotencyMismatch(PayRouterError):
    """The Idempotency-Key was already used with a different request body."""

    code = "idempotency_key_reused"


class IdempotencyInFlight(PayRouterError):
    """A request with the same Idempotency-Key is still being processed."""

    code = "idempotency_key_in_use"


class RateLimited(PayRouterError):
    """Too many requests."""

    code = "rate_limited"


class PaymentDeclined(PayRouterError):
    """Refused before any money moved (402). ``decision`` travels in ``extra``."""

    code = "payment_declined"


class RuleDeclined(PaymentDeclined):
    """A rule declined the operation."""

    code = "rule_declined"


class LimitExceeded(PaymentDeclined):
    """A limit from the rules would be exceeded."""

    code = "limit_exceeded"


class LimitUnavailable(PaymentDeclined):
    """A velocity limit applies but cannot be counted right now (Redis unreachable): refused
    rather than let through unchecked."""

    code = "limit_unavailable"


class InsufficientFunds(PaymentDeclined):
    """The account does not hold enough available balance."""

    code = "insufficient_funds"


class NoRoute(PaymentDeclined):
    """No channel is left to carry the operation."""

    code = "no_route"


class ServiceUnavailable(PayRouterError):
    """A backing service is down, or the system is paused or read-only."""

    code = "service_unavailable"


class ChannelError(PayRouterError):
    """Root of channel adapter faults (see channels/base.py)."""

    code = "channel_error"


class InvalidConfiguration(PayRouterError):
    """A setting's value cannot be used (named with the variable it came from)."""

    code = "invalid_configuration"
