"""State machines as data. Top-ups, withdrawals and refunds share one:
pending → processing → succeeded | failed, and nothing else.

Payments add three statuses (contract §1): ``requires_action`` (the customer must complete a step at
the channel, e.g. 3-D Secure), ``requires_capture`` (authorized with ``capture_method: manual``;
``capture`` → succeeded, ``cancel`` or the authorization's expiry → canceled) and ``canceled``."""
from __future__ import annotations

PENDING, PROCESSING, SUCCEEDED, FAILED = "pending", "processing", "succeeded", "failed"
REQUIRES_ACTION, REQUIRES_CAPTURE, CANCELED = "requires_action", "requires_capture", "canceled"

OPERATION_TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({PROCESSING}),
    PROCESSING: frozenset({SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
}
PAYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    **OPERATION_TRANSITIONS,
    PROCESSING: frozenset({SUCCEEDED, FAILED, REQUIRES_ACTION, REQUIRES_CAPTURE}),
    # The customer's step ends in the channel's word (a callback or a status query), or the merchant
    # abandons it (cancel).
    REQUIRES_ACTION: frozenset({SUCCEEDED, FAILED, REQUIRES_CAPTURE, CANCELED}),
    # Authorized: captured (in full or in part), or voided by the merchant or by expiry.
    REQUIRES_CAPTURE: frozenset({SUCCEEDED, CANCELED}),
    CANCELED: frozenset(),
}
FINAL = frozenset(s for s, nxt in PAYMENT_TRANSITIONS.items() if not nxt)
# Not final, and waiting for the channel (or the customer, or the merchant's capture): status
# queries and callbacks may still move them.
OPEN = frozenset({PROCESSING, REQUIRES_ACTION, REQUIRES_CAPTURE})


def allowed(current: str, target: str, kind: str) -> bool:
    """Whether an operation of ``kind`` may move from ``current`` to ``target``."""
    table = PAYMENT_TRANSITIONS if kind == "payment" else OPERATION_TRANSITIONS
    return target in table.get(current, frozenset())
