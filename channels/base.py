"""The channel interface: one abstract class, frozen requests and results.

Declines are data (a ``ChannelResult`` with ``status="failed"``); faults are exceptions:
``ChannelUnavailable`` means nothing reached the channel (safe to re-route),
``ChannelTimeout`` means the outcome is unknown (never re-route: query it later).
"""
from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping

from app.domain.errors import ChannelError

if TYPE_CHECKING:  # pragma: no cover
    from channels.config import ChannelSpec, Cost

# A payment may also wait for its customer (requires_action: ``next_action``), wait for its capture
# (requires_capture: authorized with ``capture_method: manual``) or end voided (canceled).
STATUSES = ("succeeded", "failed", "processing", "requires_action", "requires_capture", "canceled")
Status = Literal["succeeded", "failed", "processing", "requires_action", "requires_capture", "canceled"]


class ChannelUnavailable(ChannelError):
    """The channel was not reached or refused the request unprocessed (nothing charged: safe to re-route)."""

    code = "channel_unavailable"


class RequestNotSent(ChannelUnavailable):
    """Refused before anything was sent: a request that could not go on the wire as it is (a line
    break in a header, say; channels.http raises it). Nothing was charged, so failing over is
    safe, and nothing was learnt about the channel: the router never counts it against the
    channel's circuit (a merchant's unusable credentials must not open it for every merchant)."""


class ChannelTimeout(ChannelError):
    """The channel did not answer in time: the outcome is unknown (never re-route; query later)."""

    code = "channel_timeout"


class OperationNotSupported(ChannelError):
    """The adapter or channel instance does not support this operation."""

    code = "operation_not_supported"


class CredentialsRefused(ChannelError):
    """The PSP refused a merchant account's credentials (``Channel.verify_credentials``; raised by a
    call made for a merchant's account, the router records a failed attempt
    ``channel_credentials_refused``, as a decline: the merchant's account, not the channel)."""

    code = "channel_credentials_refused"


class InvalidCallback(ChannelError):
    """A callback is unsigned, forged, tampered with, stale or malformed."""

    code = "invalid_callback"


@dataclass(frozen=True)
class ChargeRequest:
    operation: Literal["payment", "topup"]
    reference: str  # our object id, e.g. pay_… or top_…
    amount: int  # minor units
    currency: str
    payment_method: Mapping[str, Any]  # as the merchant described it, without the token
    callback_url: str | None
    idempotency_key: str
    # The card token (``tok_…`` from the channel's vault), for the adapter alone: the router never
    # stores, logs or answers it, so it is kept out of payment_method and out of this object's repr.
    token: str | None = field(default=None, repr=False)
    capture_method: Literal["automatic", "manual"] = "automatic"


@dataclass(frozen=True)
class CaptureRequest:
    """Capture ``amount`` (all or part) of an authorized payment; ``VoidRequest``: release it."""

    reference: str  # pay_…
    channel_reference: str
    amount: int
    currency: str
    idempotency_key: str


@dataclass(frozen=True)
class VoidRequest:
    reference: str
    channel_reference: str
    idempotency_key: str


@dataclass(frozen=True)
class RefundRequest:
    reference: str  # re_…
    payment_channel_reference: str  # the channel's reference of the payment being refunded
    amount: int
    currency: str
    callback_url: str | None
    idempotency_key: str


@dataclass(frozen=True)
class PayoutRequest:
    reference: str  # wd_…
    amount: int
    currency: str
    destination: Mapping[str, Any]
    callback_url: str | None
    idempotency_key: str


@dataclass(frozen=True)
class ChannelResult:
    status: Status
    channel_reference: str | None
    error_code: str | None = None
    error_message: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    next_action: Mapping[str, Any] | None = None  # requires_action: {"type": "redirect_to_url", "url"}
    amount_captured: int | None = None  # a capture's amount (None: the whole payment)
    capture_before: dt.datetime | None = None  # requires_capture: when the channel voids it (UTC)


@dataclass(frozen=True)
class DisputeNotice:
    """A chargeback as the channel reports it: opened (``needs_response``) or closed (``won``, ``lost``)."""

    channel_reference: str  # the channel's id of the dispute (not of the payment)
    status: Literal["needs_response", "won", "lost"]
    amount: int  # minor units, of the payment's currency
    currency: str
    reason: str | None = None


@dataclass(frozen=True)
class CallbackEvent:
    """A verified callback: about an operation (``status``: its status at the channel), or, with
    ``dispute``, about a dispute of the payment ``reference`` (``channel_reference``: the payment's at
    the channel; ``status``: the dispute's)."""

    channel_reference: str
    reference: str  # our object id
    status: Status | str
    error_code: str | None
    dedupe_key: str  # identical on every redelivery of the same event
    raw: Mapping[str, Any]
    dispute: DisputeNotice | None = None


@dataclass(frozen=True)
class StatementLine:
    channel_reference: str
    operation: str
    amount: int
    currency: str
    status: str
    fee: int
    settled_at: dt.datetime


class Channel(abc.ABC):
    """One configured channel instance. Subclasses implement the protocol of one PSP."""

    # What a merchant's own account at this channel carries (contract §4, merchant channel
    # accounts), e.g. ``("api_key",)``; none: the channel takes no merchant credentials.
    credential_fields: tuple[str, ...] = ()

    # False for a PSP that signs nothing and takes no key: its channels run with ``secret`` "" unless
    # their ``config.secret_env`` names a set variable, and none is generated for them (even live).
    needs_secret = True

    def __init__(self, spec: "ChannelSpec", secret: str):
        self.spec = spec
        self.secret = secret

    id = property(lambda self: self.spec.id)
    methods = property(lambda self: self.spec.methods)
    currencies = property(lambda self: self.spec.currencies)
    operations = property(lambda self: self.spec.operations)
    timeout_ms = property(lambda self: self.spec.timeout_ms)

    @property
    def cost(self) -> "Cost":
        return self.spec.cost

    def with_credentials(self, credentials: Mapping[str, str]) -> "Channel":
        """This channel acting for a merchant's own account: an instance whose every request (and
        statement) uses ``credentials`` (exactly the ``credential_fields``, strings). The router
        makes it once per account and keeps it; credentials must never be logged or shown."""
        raise OperationNotSupported(f"channel {self.id} takes no merchant credentials")

    def verify_credentials(self, credentials: Mapping[str, str]) -> None:
        """Optional: check a merchant account's credentials with the PSP before they are stored (one
        cheap authenticated call). Return if it takes them, raise CredentialsRefused if it refuses
        them, ChannelUnavailable or ChannelTimeout if it cannot say. Not overridden: stored unchecked."""
        raise OperationNotSupported(f"channel {self.id} cannot check credentials")

    def supports(self, operation: str, currency: str, method: str | None = None) -> str | None:
        """None if this instance can carry the operation, else the drop reason."""
        if operation not in self.operations:
            return "unsupported_operation"
        if currency not in self.currencies:
            return "unsupported_currency"
        if method is not None and method not in self.methods:
            return "unsupported_method"
        return None

    @abc.abstractmethod
    def charge(self, req: ChargeRequest) -> ChannelResult:
        """Collect money (a payment or a top-up)."""

    def refund(self, req: RefundRequest) -> ChannelResult:
        raise OperationNotSupported(f"channel {self.id} does not refund")

    def payout(self, req: PayoutRequest) -> ChannelResult:
        raise OperationNotSupported(f"channel {self.id} does not pay out")

    def capture(self, req: CaptureRequest) -> ChannelResult:
        """Capture an authorization: ``succeeded`` (with ``amount_captured``), or failed with a code."""
        raise OperationNotSupported(f"channel {self.id} does not capture")

    def void(self, req: VoidRequest) -> ChannelResult:
        """Release an authorization, or abandon a customer's action: ``canceled``, or failed with a code."""
        raise OperationNotSupported(f"channel {self.id} does not void")

    @abc.abstractmethod
    def query(self, reference: str, channel_reference: str | None = None) -> ChannelResult:
        """Current status of an operation, by our reference (or the channel's, when known)."""

    @abc.abstractmethod
    def verify_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """Verify and parse a callback; raise InvalidCallback when it cannot be trusted."""

    def statement(self, date: dt.date, since: dt.datetime | None = None) -> Iterable[StatementLine]:
        """The lines the channel settled on ``date`` (UTC), from ``since`` on if given (one that cannot
        filter may return the whole day: the router filters). Yield them as they stream in, of any
        number (the router stages them in its database as they come), or return a list."""
        raise OperationNotSupported(f"channel {self.id} serves no statement")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"
