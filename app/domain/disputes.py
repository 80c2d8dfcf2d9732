"""Disputes (chargebacks) as the channel reports them: a dispute opens ``needs_response`` and closes
once, ``won`` or ``lost`` (contract §1, ``dp_…``). The channel decides; we only record its word,
so a close is accepted only from ``needs_response`` and a repeated or late word changes nothing."""
from __future__ import annotations

NEEDS_RESPONSE, DISPUTE_WON, DISPUTE_LOST = "needs_response", "won", "lost"
STATUSES = (NEEDS_RESPONSE, DISPUTE_WON, DISPUTE_LOST)
CLOSED = frozenset({DISPUTE_WON, DISPUTE_LOST})
# A payment with a dispute in one of these is not refunded (the chargeback returns, or may return,
# the money); a won one leaves what is left refundable.
BLOCKS_REFUNDS = frozenset({NEEDS_RESPONSE, DISPUTE_LOST})
# The channel's word on a dispute's reason, when it gives none (the sandbox says fraudulent).
DEFAULT_REASON = "general"


def closes(current: str, reported: str) -> bool:
    """Whether a dispute ``current`` becomes ``reported`` (the channel's word): only an open one closes."""
    return current == NEEDS_RESPONSE and reported in CLOSED
