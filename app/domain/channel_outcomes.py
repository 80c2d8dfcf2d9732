"""Which failed calls say nothing about the channel: the one list that the circuit breaker, the
``success_rate`` strategy's counts and the operators' success rates (the "Channels" page, the
"Dashboard") all leave out.

A call whose attempt failed with one of these codes never measured the channel: nothing was sent
(``operation_not_supported``, ``channel_account_unusable``: a merchant's account that could not make
the request), or the PSP refused one merchant's own credentials (``channel_credentials_refused``:
that merchant's key is wrong, the channel is up). Counting them would let one merchant with a bad key
push every merchant's traffic away from a channel, or open its circuit.
"""
from __future__ import annotations

from app.domain.states import FAILED

NOT_THE_CHANNELS: frozenset[str] = frozenset({
    "operation_not_supported",
    "channel_account_unusable",
    "channel_credentials_refused",
})


def says_nothing_of_the_channel(status: str, code: str | None) -> bool:
    """True for a failed call that tells nothing of the channel's health (see above)."""
    return status == FAILED and code in NOT_THE_CHANNELS
