"""The sandbox adapter: our requests to the sandbox's wire format and its answers back."""
from __future__ import annotations

import copy
import csv
import datetime as dt
import json
from typing import Iterator, Mapping
from urllib.parse import quote

from channels.base import (
    STATUSES,
    CallbackEvent,
    CaptureRequest,
    Channel,
    ChannelError,
    ChannelResult,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRequest,
    CredentialsRefused,
    DisputeNotice,
    InvalidCallback,
    OperationNotSupported,
    PayoutRequest,
    RefundRequest,
    StatementLine,
    VoidRequest,
)
from channels.sandbox import signing
from channels.sandbox.client import SandboxClient

DEFAULT_BASE_URL = "http://127.0.0.1:8090"
STATEMENT_COLUMNS = ("channel_reference", "operation", "amount", "currency", "status", "fee", "settled_at")


def _segment(value: str) -> str:
    """One URL path segment from any value: a ``/``, ``?``, ``#``, ``..`` or CR LF in a reference the
    channel gave us stays inside this segment (percent-encoded) instead of changing the request."""
    return quote(str(value), safe="")


def _result(status_code: int, body: dict) -> ChannelResult:
    """A sandbox answer as a ChannelResult; a refused request (4xx) is a failed result, never a fault,
    except a merchant account's key refused (401, 403: only a client bearing an account's key is
    answered them, SandboxClient.bearing), which is CredentialsRefused: that merchant's key is wrong,
    not a decline that says anything of the channel (the router records ``channel_credentials_refused``)."""
    if status_code in (401, 403):
        raise CredentialsRefused("the sandbox refused the account's api_key")
    if status_code >= 400:
        error = body.get("error") or {}
        return ChannelResult("failed", None, error.get("code") or "channel_error", error.get("message"), body)
    status = body.get("status")
    if status not in STATUSES or not body.get("id"):
        raise ChannelTimeout(f"sandbox answered an unexpected body (outcome unknown): {body!r}")
    action, captured, before = body.get("next_action"), body.get("amount_captured"), body.get("capture_before")
    return ChannelResult(status, body["id"], body.get("error_code"), body.get("error_message"), body,
                         next_action=action if isinstance(action, dict) else None,
                         amount_captured=captured if type(captured) is int else None,
                         capture_before=_moment(before))


def _moment(text) -> dt.datetime | None:
    """An RFC 3339 time of the sandbox's (UTC), or None."""
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if isinstance(text, str) else None
    except ValueError:
        return None


DISPUTE_STATUSES = ("needs_response", "won", "lost")


def _dispute_event(event: dict, dedupe_key: str) -> CallbackEvent:
    """A dispute callback (``data``: the sandbox's dispute, whose ``payment`` is the disputed
    charge's id and ``reference`` ours) as a CallbackEvent carrying a DisputeNotice."""
    data = event["data"]
    if data["status"] not in DISPUTE_STATUSES:
        raise InvalidCallback(f"dispute callback has an unknown status {data['status']!r}")
    if type(data["amount"]) is not int or not isinstance(data["currency"], str):
        raise InvalidCallback("dispute callback has no integer amount or no currency")
    reason = data.get("reason")
    notice = DisputeNotice(channel_reference=data["id"], status=data["status"], amount=data["amount"],
                           currency=data["currency"], reason=reason if isinstance(reason, str) else None)
    return CallbackEvent(channel_reference=data["payment"], reference=data["reference"], status=data["status"],
                         error_code=None, dedupe_key=dedupe_key, raw=event, dispute=notice)


class SandboxChannel(Channel):
    """A channel instance served by the sandbox PSP (``payrouter sandbox``)."""

    credential_fields = ("api_key",)  # a merchant account's key, from the sandbox's POST /accounts

    def __init__(self, spec, secret: str):
        super().__init__(spec, secret)
        base_url = spec.config.get("base_url") or DEFAULT_BASE_URL
        self.client = SandboxClient(base_url, spec.id, secret, spec.timeout_ms, config=spec.config)

    def with_credentials(self, credentials: Mapping[str, str]) -> "SandboxChannel":
        """Requests (and statements) sent with the account's key; callbacks still verified with the
        channel's secret, which signs them for every account."""
        account = copy.copy(self)
        account.client = self.client.bearing(credentials["api_key"])
        return account

    def verify_credentials(self, credentials: Mapping[str, str]) -> None:
        """One authenticated GET of the account the key belongs to: 401/403 is a key the sandbox did
        not issue; anything else but 200 says nothing about the key (ChannelUnavailable)."""
        status, _ = self.with_credentials(credentials).client.whoami()
        if status in (401, 403):
            raise CredentialsRefused(f"channel {self.id} refused the account's api_key")
        if status != 200:
            raise ChannelUnavailable(f"channel {self.id} answered HTTP {status} to a credentials check")

    def _require(self, operation: str) -> None:
        if operation not in self.operations:
            raise OperationNotSupported(f"channel {self.id} is not configured for {operation}")

    def charge(self, req: ChargeRequest) -> ChannelResult:
        self._require(req.operation)
        method = dict(req.payment_method)
        if req.token is not None:
            method["token"] = req.token
        payload = {"operation": req.operation, "reference": req.reference, "amount": req.amount,
                   "currency": req.currency, "payment_method": method, "callback_url": req.callback_url}
        if req.capture_method == "manual":
            payload["capture_method"] = "manual"
        return _result(*self.client.post("/charges", payload, req.idempotency_key))

    def capture(self, req: CaptureRequest) -> ChannelResult:
        path = f"/operations/{_segment(req.channel_reference)}/capture"
        return _result(*self.client.post(path, {"amount": req.amount}, req.idempotency_key))

    def void(self, req: VoidRequest) -> ChannelResult:
        path = f"/operations/{_segment(req.channel_reference)}/void"
        return _result(*self.client.post(path, {}, req.idempotency_key))

    def refund(self, req: RefundRequest) -> ChannelResult:
        self._require("refund")
        payload = {"reference": req.reference, "payment": req.payment_channel_reference, "amount": req.amount,
                   "currency": req.currency, "callback_url": req.callback_url}
        return _result(*self.client.post("/refunds", payload, req.idempotency_key))

    def payout(self, req: PayoutRequest) -> ChannelResult:
        self._require("withdrawal")
        payload = {"reference": req.reference, "amount": req.amount, "currency": req.currency,
                   "destination": dict(req.destination), "callback_url": req.callback_url}
        return _result(*self.client.post("/payouts", payload, req.idempotency_key))

    def query(self, reference: str, channel_reference: str | None = None) -> ChannelResult:
        """Status by the channel's reference if known, else by ours. Unknown at the channel →
        failed with ``error_code="not_found"``: the router fails an operation the channel never
        acknowledged, and leaves one it did acknowledge processing for review (a lost record)."""
        if channel_reference:
            status_code, body = self.client.get(f"/operations/{_segment(channel_reference)}")
        else:
            status_code, body = self.client.get("/operations", {"reference": reference})
        if status_code == 404:
            return ChannelResult("failed", channel_reference, "not_found", "the channel has no such operation", body)
        return _result(status_code, body)

    def verify_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        signing.verify(self.secret, headers, body)
        try:
            event = json.loads(body)
            data = event["data"]
            if event.get("channel") != self.id or data.get("channel") != self.id:
                raise InvalidCallback(f"callback is for channel {event.get('channel')!r}, not {self.id!r}")
            if data.get("operation") == "dispute":
                return _dispute_event(event, f"{self.id}:{event['id']}")
            if data["status"] not in STATUSES:
                raise InvalidCallback(f"callback has an unknown status {data['status']!r}")
            return CallbackEvent(channel_reference=data["id"], reference=data["reference"], status=data["status"],
                                 error_code=data.get("error_code"), dedupe_key=f"{self.id}:{event['id']}",
                                 raw=event)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidCallback(f"callback body is malformed: {exc}") from None

    def statement(self, date: dt.date, since: dt.datetime | None = None) -> Iterator[StatementLine]:
        """The day's lines as the CSV streams in, one at a time (never the whole text at once)."""
        params = {"channel": self.id}
        if since is not None:
            params["since"] = since.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows = csv.reader(self.client.text_lines(f"/statements/{_segment(date.isoformat())}", params))
        try:
            header = next(rows, None)
            if header is None:
                return
            at = {name: header.index(name) for name in STATEMENT_COLUMNS}  # ValueError: a column is missing
            ref, op, amount, currency, status, fee, settled = (at[name] for name in STATEMENT_COLUMNS)
            fromisoformat = dt.datetime.fromisoformat
            for row in rows:
                if row:
                    yield StatementLine(row[ref], row[op], int(row[amount]), row[currency], row[status],
                                        int(row[fee]), fromisoformat(row[settled]))
        except (csv.Error, ValueError, IndexError) as exc:  # a line this adapter cannot read
            raise ChannelError(f"{self.id}: the statement for {date.isoformat()} cannot be read at line "
                               f"{rows.line_num}: {exc}", code="statement_malformed") from None
