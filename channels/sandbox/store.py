"""In-memory, thread-safe state of the sandbox PSP: operations, idempotency keys, statements."""
from __future__ import annotations

import datetime as dt
import secrets
import threading
from dataclasses import dataclass, field


def rfc3339(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


@dataclass
class Operation:
    """One charge, refund or payout as the simulated PSP sees it."""

    channel: str
    operation: str  # payment | topup | refund | withdrawal
    reference: str  # the router's object id
    amount: int
    currency: str
    status: str
    created_at: dt.datetime
    id: str = field(default_factory=lambda: "sbx_" + secrets.token_hex(10))
    error_code: str | None = None
    error_message: str | None = None
    settled_at: dt.datetime | None = None
    payment: str | None = None  # refunds: the refunded operation's id
    callback_url: str | None = None
    request_id: str | None = None
    # Authorize now, capture later (channels.sandbox.authorizations): ``amount`` becomes what was
    # captured (statements and refunds count it), ``authorized`` keeps what was authorized.
    capture_method: str = "automatic"
    authorized: int | None = None
    capture_before: dt.datetime | None = None
    next_action: dict | None = None  # requires_action: where the customer approves or declines
    account: str | None = None  # the merchant account whose key made it (None: the platform's)
    reason: str | None = None  # a dispute's (channels.sandbox.disputes)

    def to_json(self) -> dict:
        return {
            "id": self.id, "object": "operation", "channel": self.channel, "operation": self.operation,
            "reference": self.reference, "amount": self.amount, "currency": self.currency,
            "status": self.status, "error_code": self.error_code, "error_message": self.error_message,
            "payment": self.payment, "created_at": rfc3339(self.created_at), "settled_at": rfc3339(self.settled_at),
            "capture_method": self.capture_method, "amount_authorized": self.authorized or self.amount,
            "amount_captured": self.amount if self.operation == "capture" else None,
            "capture_before": rfc3339(self.capture_before), "next_action": self.next_action,
            **({"reason": self.reason} if self.operation == "dispute" else {}),
        }


class Store:
    """All sandbox state behind one re-entrant lock (``with store.lock`` for compound steps)."""

    def __init__(self, auth_expiry: dt.timedelta = dt.timedelta(days=7)):
        self.lock = threading.RLock()
        self.auth_expiry = auth_expiry  # an uncaptured authorization is voided this long after it is made
        self.authorizations: dict[str, Operation] = {}  # requires_capture, by id: what expiry looks at
        self._ops: dict[str, Operation] = {}
        # (channel, account, key) -> (fingerprint, op id)
        self._by_key: dict[tuple[str, str | None, str], tuple[str, str]] = {}

    def by_key(self, channel: str, key: str, account: str | None = None) -> tuple[str, Operation] | None:
        with self.lock:
            found = self._by_key.get((channel, account, key))
            return (found[0], self._ops[found[1]]) if found else None

    def add(self, op: Operation, key: str, fingerprint: str) -> None:
        with self.lock:
            self._ops[op.id] = op
            self._by_key[(op.channel, op.account, key)] = (fingerprint, op.id)

    def keep(self, op: Operation) -> None:
        """An operation made by the sandbox itself (a dispute): no idempotency key of the router's."""
        with self.lock:
            self._ops[op.id] = op

    def get(self, channel: str, op_id: str, account: str | None = None) -> Operation | None:
        """An operation of this channel and account (another account's answers None, as unknown ones)."""
        with self.lock:
            op = self._ops.get(op_id)
            return op if op and op.channel == channel and op.account == account else None

    def find(self, op_id: str) -> Operation | None:
        """An operation by its id alone (the customer's action page names no channel)."""
        with self.lock:
            return self._ops.get(op_id)

    def by_reference(self, channel: str, reference: str, account: str | None = None) -> Operation | None:
        """The latest operation of a channel and account carrying the router's reference (a dispute
        carries its payment's: it is never the answer about the payment)."""
        with self.lock:
            found = [op for op in self._ops.values() if op.channel == channel and op.reference == reference
                     and op.account == account and op.operation != "dispute"]
            return max(found, key=lambda op: op.created_at) if found else None

    def view(self, op: Operation) -> dict:
        """A consistent JSON snapshot of an operation (callback threads may be settling it)."""
        with self.lock:
            return op.to_json()

    def refunded(self, payment_id: str) -> int:
        """Amount already refunded or being refunded on a payment."""
        with self.lock:
            return sum(op.amount for op in self._ops.values()
                       if op.payment == payment_id and op.status in ("succeeded", "processing"))

    def finalize(self, op: Operation, status: str, at: dt.datetime, error_code: str | None = None) -> None:
        with self.lock:
            if op.status in ("processing", "requires_action") and status == "succeeded" \
                    and op.capture_method == "manual":
                self.authorize(op, at)
            elif op.status in ("processing", "requires_action"):
                op.status, op.error_code, op.settled_at, op.next_action = status, error_code, at, None
                if error_code:
                    op.error_message = "The card was declined."

    def authorize(self, op: Operation, at: dt.datetime) -> None:
        """A payment that would succeed, made with ``capture_method: manual``: held until captured,
        voided or expired (not settled: no statement line until then)."""
        with self.lock:
            op.status, op.next_action, op.authorized = "requires_capture", None, op.amount
            op.capture_before = at + self.auth_expiry
            self.authorizations[op.id] = op

    def settled_on(self, channel: str, day: dt.date, account: str | None = None) -> list[Operation]:
        """Final operations of a channel and account whose settlement fell on ``day`` (UTC), oldest first."""
        with self.lock:
            rows = [op for op in self._ops.values() if op.channel == channel and op.account == account and op.settled_at
                    and op.settled_at.astimezone(dt.timezone.utc).date() == day]
            return sorted(rows, key=lambda op: (op.settled_at, op.id))
