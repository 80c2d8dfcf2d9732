"""The sandbox's disputes (contract §4, row 58): a payment that succeeds with an amount ending in 58
is disputed by its cardholder ``delay`` seconds later (default 2) for its full amount; one made with
``capture_method: manual`` is disputed ``delay`` seconds after its capture, for what was captured
(channels.sandbox.authorizations), and never while it is only authorized.

A dispute is an operation of the store (``operation: dispute``, id ``sbxdp_…``, ``payment``: the
charge's id, ``reference``: the router's payment id), dated when it is reported, so the statement
of that day lists it: ``dispute`` line of its amount, its status (``needs_response``, then ``won`` or
``lost``) and no fee. It is reported with a signed callback (``dispute.needs_response``) to the
charge's ``callback_url``; ``POST /disputes/<sbxdp_id>/close {"status": "won"|"lost"}`` (no auth:
it stands for the card network's ruling, as a test or demo drives it) closes it and posts the
callback again with the new status. A dispute closes once: closing it again answers 409.
"""
from __future__ import annotations

import secrets
import threading
from typing import TYPE_CHECKING

from channels.sandbox.store import Operation

if TYPE_CHECKING:  # pragma: no cover
    from channels.sandbox.server import SandboxPSP

DEFAULT_DELAY_S = 2.0
REASON = "fraudulent"  # what the sandbox's cardholders always say
OPEN, CLOSED = "needs_response", ("won", "lost")


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Disputes:
    def __init__(self, psp: "SandboxPSP", delay: float = DEFAULT_DELAY_S):
        self.psp, self.store, self.delay = psp, psp.store, delay
        self.stopped = threading.Event()

    def schedule(self, charge: Operation, secret: str) -> None:
        """Dispute ``charge`` (a payment that succeeded, or a capture) ``delay`` seconds from now."""
        threading.Thread(target=self._later, args=(charge, secret), name=f"sandbox-dispute-{charge.id}",
                         daemon=True).start()

    def close(self) -> None:
        self.stopped.set()

    def _later(self, charge: Operation, secret: str) -> None:
        if self.stopped.wait(self.delay):
            return
        self.psp.sender.notify(self.open(charge), secret)

    def open(self, charge: Operation) -> Operation:
        """The dispute of ``charge``, reported now (one per charge)."""
        now = self.psp.clock()
        with self.store.lock:
            dispute = Operation(channel=charge.channel, operation="dispute", reference=charge.reference,
                                amount=charge.amount, currency=charge.currency, status=OPEN, created_at=now,
                                id="sbxdp_" + secrets.token_hex(10), settled_at=now, payment=charge.id,
                                callback_url=charge.callback_url, request_id=charge.request_id, reason=REASON,
                                account=charge.account)
            self.store.keep(dispute)
        return dispute

    def rule(self, dispute_id: str, data: dict) -> tuple[Operation, str]:
        """Close a dispute ``won`` or ``lost`` (the network's ruling): the dispute and its channel's id."""
        status = data.get("status")
        if status not in CLOSED:
            raise Refused(400, "invalid_status", "status must be won or lost")
        with self.store.lock:
            dispute = self.store.find(dispute_id)
            if dispute is None or dispute.operation != "dispute":
                raise Refused(404, "dispute_not_found", "no such dispute")
            if dispute.status != OPEN:
                raise Refused(409, "dispute_closed", f"the dispute is already {dispute.status}")
            dispute.status = status
        return dispute, dispute.channel
