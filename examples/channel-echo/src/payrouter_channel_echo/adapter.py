"""The Echo Pay adapter: PayRouter's charges, refunds and queries in Echo Pay's wire format
(payrouter_channel_echo.psp), and its answers, callbacks and settlements back.

It only builds requests and maps answers. Sending them, the time limits, and what a fault means
(nothing was charged: fail over; or unknown: query later) are the router's channel HTTP layer's
(channels.http), so every adapter classifies faults the same way.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import time
from typing import Any, Iterator, Mapping
from urllib.parse import quote

from app import context
from channels.base import (
    CallbackEvent,
    Channel,
    ChannelError,
    ChannelResult,
    ChannelTimeout,
    ChargeRequest,
    InvalidCallback,
    RefundRequest,
    StatementLine,
)
from channels.http import Answer, for_channel

STATES = {"approved": "succeeded", "declined": "failed", "pending": "processing"}
NOT_FOUND = "not_found"  # what the router expects of a query for an operation the channel never saw
REFUSED = (401, 429)  # Echo Pay did not process the request: safe to fail over (besides every 5xx)
TOLERANCE_S = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class EchoChannel(Channel):
    """One channel instance on Echo Pay; ``config.base_url`` says where it answers."""

    def __init__(self, spec, secret: str):
        super().__init__(spec, secret)
        self.http = for_channel(spec.id, spec.config["base_url"], spec.timeout_ms, spec.config)

    def charge(self, req: ChargeRequest) -> ChannelResult:
        body = {"amount": req.amount, "currency": req.currency, "ref": req.reference, "notify_url": req.callback_url}
        if req.token is not None:
            body["card_token"] = req.token
        return _result(self._call("POST", "/v1/payments", body, req.idempotency_key), "payment_id")

    def refund(self, req: RefundRequest) -> ChannelResult:
        body = {"payment_id": req.payment_channel_reference, "amount": req.amount, "ref": req.reference}
        return _result(self._call("POST", "/v1/refunds", body, req.idempotency_key), "refund_id")

    def query(self, reference: str, channel_reference: str | None = None) -> ChannelResult:
        if channel_reference:  # a value Echo Pay gave us: one encoded path segment, whatever it holds
            answer = self._call("GET", "/v1/payments/" + quote(channel_reference, safe=""))
        else:
            answer = self._call("GET", "/v1/payments", params={"ref": reference})
        if answer.status == 404:
            return ChannelResult("failed", channel_reference, NOT_FOUND, "Echo Pay has no such payment")
        return _result(answer, "payment_id")

    def verify_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        named = {str(name).lower(): str(value) for name, value in headers.items()}
        stamp, signature = named.get("echo-timestamp", ""), named.get("echo-signature", "")
        if not _TIMESTAMP.fullmatch(stamp) or abs(time.time() - int(stamp)) > TOLERANCE_S:
            raise InvalidCallback("callback is unsigned, or its timestamp is stale")
        expected = hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise InvalidCallback("callback signature does not match")
        try:
            event = json.loads(body)
            return CallbackEvent(channel_reference=event["payment_id"], reference=event["ref"],
                                 status=STATES[event["state"]], error_code=event.get("reason"),
                                 dedupe_key=f"{self.id}:{event['event_id']}", raw=event)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCallback(f"callback body is malformed: {exc!r}") from None

    def statement(self, date: dt.date, since: dt.datetime | None = None) -> Iterator[StatementLine]:
        answer = self._call("GET", f"/v1/settlements/{date.isoformat()}")
        try:
            for line in _json(answer)["lines"]:
                yield StatementLine(line["id"], line["kind"], int(line["amount"]), line["currency"],
                                    STATES[line["state"]], int(line["fee"]),
                                    dt.datetime.fromisoformat(line["settled_at"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ChannelError(f"{self.id}: the settlement of {date} cannot be read: {exc!r}",
                               code="statement_malformed") from None

    def _call(self, method: str, path: str, body: dict | None = None, key: str | None = None,
              params: Mapping[str, str] | None = None) -> Answer:
        headers = {"Echo-Key": self.secret, "Accept": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        if body is not None:
            headers["Content-Type"] = "application/json"
        return self.http.request(method, path, params=params, headers=context.outgoing_headers(headers),
                                 body=None if body is None else json.dumps(body).encode(), refused=REFUSED)


def _json(answer: Answer) -> dict[str, Any]:
    try:
        data = json.loads(answer.data)
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {}


def _result(answer: Answer, id_field: str) -> ChannelResult:
    """An answer as an outcome: a refusal with a reason (4xx) is a decline, as data; a 2xx that names
    no state or no reference leaves the outcome unknown."""
    data = _json(answer)
    if answer.status >= 400:
        return ChannelResult("failed", None, str(data.get("error") or "channel_error"), data.get("message"), data)
    status, reference = STATES.get(data.get("state")), data.get(id_field)
    if status is None or not isinstance(reference, str) or not reference:
        raise ChannelTimeout("Echo Pay answered without an outcome: it is unknown")
    return ChannelResult(status, reference, data.get("reason"), None, data)
