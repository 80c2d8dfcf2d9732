"""The sandbox table (contract §4): the last two digits of the amount choose the outcome."""
from __future__ import annotations

from dataclasses import dataclass

DECLINE_CODE = "card_declined"
SOFT_DECLINE_CODE = "issuer_unavailable"  # a soft decline: a rule's retry may try the next channel
MESSAGES = {DECLINE_CODE: "The card was declined.",
            SOFT_DECLINE_CODE: "The card's issuer could not be reached; another attempt may succeed."}


@dataclass(frozen=True)
class Outcome:
    """What the sandbox does with an operation.

    ``http_error``: answer 500 and record nothing. ``initial``: the status answered at once.
    ``final``: the status reached by a callback (``callbacks`` deliveries) or None.
    ``hang``: answer only after the channel's timeout has passed.
    ``dispute``: a payment that succeeds is disputed later (channels.sandbox.disputes).
    """

    initial: str | None
    final: str | None = None
    error_code: str | None = None
    callbacks: int = 0
    hang: bool = False
    http_error: bool = False
    dispute: bool = False


SUCCEEDED = Outcome("succeeded")
TABLE: dict[int, Outcome] = {
    51: Outcome("failed", error_code=DECLINE_CODE),
    52: Outcome("processing", final="succeeded", callbacks=1),
    53: Outcome("processing", final="failed", error_code=DECLINE_CODE, callbacks=1),
    54: Outcome("succeeded", hang=True),
    55: Outcome(None, http_error=True),
    56: Outcome("processing", final="succeeded", callbacks=3),
    57: Outcome("requires_action"),  # the customer approves or declines (channels.sandbox.authorizations)
    58: Outcome("succeeded", dispute=True),  # then a chargeback of the full amount (channels.sandbox.disputes)
    59: Outcome("failed", error_code=SOFT_DECLINE_CODE),
}


def outcome_for(amount: int) -> Outcome:
    """00–49 and unlisted tails succeed at once; 51–59 as in the contract table."""
    return TABLE.get(amount % 100, SUCCEEDED)
