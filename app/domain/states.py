"""State machines as data. Payments, top-ups, withdrawals and refunds share one:
pending → processing → succeeded | failed, and nothing else."""
from __future__ import annotations

PENDING, PROCESSING, SUCCEEDED, FAILED = "pending", "processing", "succeeded", "failed"

OPERATION_TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({PROCESSING}),
    PROCESSING: frozenset({SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
}
FINAL = frozenset(s for s, nxt in OPERATION_TRANSITIONS.items() if not nxt)


def allowed(current: str, target: str) -> bool:
    return target in OPERATION_TRANSITIONS.get(current, frozenset())
