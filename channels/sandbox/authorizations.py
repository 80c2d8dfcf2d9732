"""The sandbox's authorizations and customer actions (contract §4).

- A charge with ``capture_method: manual`` whose outcome would succeed stops at ``requires_capture``
  (``capture_before``: when it is voided by itself, ``SANDBOX_AUTH_EXPIRY_S`` after it is made).
  ``POST …/operations/<id>/capture {amount?}`` captures all or part of it (``succeeded``; the
  statement line is a ``capture`` of the captured amount), ``POST …/operations/<id>/void`` releases
  it (``canceled``, a ``void`` line); an expired one is voided and a ``canceled`` callback is sent.
  Row 58 is disputed only once captured (nothing was taken before), for what was captured, ``delay``
  seconds after the capture (channels.sandbox.disputes); a voided or expired one never is.
- Payments of amounts ending in 57 answer ``requires_action`` with ``next_action: {"type": "redirect_to_url",
  "url"}``: a page of this server with "Approve" and "Decline", each of which settles the payment
  and posts the callback (approved with manual capture: ``requires_capture``). A void abandons it.

Capture, void and the customer's answer each decide under the store's lock, so of a capture and a
void racing exactly one finds the authorization still there; the other is refused (409).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import threading
from typing import TYPE_CHECKING

from channels.sandbox.outcomes import outcome_for
from channels.sandbox.serving import Reply, Request
from channels.sandbox.store import Operation

if TYPE_CHECKING:  # pragma: no cover
    from channels.sandbox.server import SandboxPSP, Served

DEFAULT_EXPIRY_S = 7 * 24 * 3600.0
DECLINED_ACTION = "authentication_failed"


class Authorizations:
    def __init__(self, psp: "SandboxPSP", expiry_s: float = DEFAULT_EXPIRY_S, public_url: str | None = None):
        self.psp = psp
        self.store = psp.store
        self.store.auth_expiry = dt.timedelta(seconds=expiry_s)
        self.public_url = public_url
        self._replies: dict[tuple, tuple[str, int, dict]] = {}  # (channel, account, key) → answer
        self._stopped = threading.Event()
        self._tick = min(1.0, max(expiry_s / 4, 0.05))
        self._expirer = threading.Thread(target=self._expire_loop, name="sandbox-auth-expiry", daemon=True)
        self._expirer.start()

    def close(self) -> None:
        self._stopped.set()

    # --- creation -----------------------------------------------------------------------------

    def prepare(self, op: Operation, data: dict, request: Request, now: dt.datetime) -> None:
        """Before a new charge is stored (under the store's lock): manual capture and actions."""
        op.capture_method = "manual" if data.get("capture_method") == "manual" else "automatic"
        if op.operation != "payment":  # a customer's step and a later capture are a payment's only
            op.capture_method = "automatic"
            if op.status == "requires_action":
                op.status = "succeeded"
        if op.status == "requires_action":
            op.settled_at = None
            base = self.public_url or f"http://{request.header('Host') or '127.0.0.1'}"
            op.next_action = {"type": "redirect_to_url", "url": f"{base.rstrip('/')}/actions/{op.id}"}
        elif op.status == "succeeded" and op.capture_method == "manual":
            op.settled_at = None
            self.store.authorize(op, now)

    # --- capture and void (the router's requests) ------------------------------------------------

    def capture(self, request: Request, served: "Served", op_id: str, data: dict) -> Reply:
        amount = data.get("amount")
        if amount is not None and (type(amount) is not int or amount <= 0):
            return _error(400, "invalid_amount", "amount must be a positive integer in minor units")

        def decide(op: Operation) -> tuple[int, dict]:
            if op.status != "requires_capture":
                return _refusal(409, "not_capturable", f"the operation is {op.status}")
            if amount is not None and amount > op.authorized:
                return _refusal(422, "amount_too_large", f"at most {op.authorized} can be captured")
            now = self.psp.clock()
            op.amount = amount if amount is not None else op.authorized
            op.status, op.operation, op.settled_at = "succeeded", "capture", now
            self.store.authorizations.pop(op.id, None)
            if outcome_for(op.authorized).dispute:  # row 58: disputed once money was taken, for all of it
                self.psp.disputes.schedule(op, served.secret)
            return 200, op.to_json()

        return self._once(request, served, op_id, data, decide)

    def void(self, request: Request, served: "Served", op_id: str, data: dict) -> Reply:
        def decide(op: Operation) -> tuple[int, dict]:
            if op.status not in ("requires_capture", "requires_action"):
                return _refusal(409, "not_voidable", f"the operation is {op.status}")
            self._void(op)
            return 200, op.to_json()

        return self._once(request, served, op_id, data, decide)

    def _once(self, request: Request, served: "Served", op_id: str, data: dict, decide) -> Reply:
        """Idempotent on (channel, Idempotency-Key): the same key and body → the same answer."""
        key = request.header("Idempotency-Key")
        if not key:
            return _error(400, "idempotency_key_missing", "Idempotency-Key header is required")
        cid, replies = served.spec.id, (served.spec.id, served.account, key)
        fingerprint = hashlib.sha256(json.dumps([op_id, request.path, data], sort_keys=True).encode()).hexdigest()
        with self.store.lock:
            if replies in self._replies:
                seen, status, body = self._replies[replies]
                if seen != fingerprint:
                    return _error(409, "idempotency_conflict", "Idempotency-Key reused with a different body")
                return Reply(status, json.dumps(body).encode(), headers={"Idempotent-Replayed": "true"})
            op = self.store.get(cid, op_id, served.account)
            if op is None:
                return _error(404, "operation_not_found", "no such operation")
            self._expire_if_due(op)
            status, body = decide(op)
            self._replies[replies] = (fingerprint, status, body)
        return Reply(status, json.dumps(body).encode())

    def _void(self, op: Operation) -> None:
        op.status, op.operation, op.settled_at, op.next_action = "canceled", "void", self.psp.clock(), None
        self.store.authorizations.pop(op.id, None)

    # --- expiry ------------------------------------------------------------------------------

    def _expire_if_due(self, op: Operation) -> bool:
        if op.status == "requires_capture" and op.capture_before and op.capture_before <= self.psp.clock():
            self._void(op)
            return True
        return False

    def expire_due(self) -> list[Operation]:
        """Void every authorization past its ``capture_before`` and post its ``canceled`` callback."""
        with self.store.lock:
            expired = [op for op in list(self.store.authorizations.values()) if self._expire_if_due(op)]
        for op in expired:
            self._notify(op)
        return expired

    def _expire_loop(self) -> None:
        while not self._stopped.wait(self._tick):
            self.expire_due()

    def _notify(self, op: Operation) -> None:
        served = self.psp.channels.get(op.channel)
        if served is not None:
            self.psp.sender.notify(op, served.secret)

    # --- the customer's page -----------------------------------------------------------------

    def page(self, op_id: str) -> Reply:
        op = self._find(op_id)
        if op is None:
            return _page(404, "No such payment", "<p>This payment does not exist.</p>")
        if op.status != "requires_action":
            return _page(200, "Payment", f"<p id=\"status\">This payment is {html.escape(op.status)}.</p>")
        amount = f"{op.amount} {html.escape(op.currency)}"
        return _page(200, "Confirm your payment", (
            f"<p>Confirm the payment of <strong>{amount}</strong> (minor units).</p>"
            f"<form method=\"post\" action=\"/actions/{html.escape(op.id)}/approve\">"
            "<button type=\"submit\" id=\"approve\">Approve</button></form>"
            f"<form method=\"post\" action=\"/actions/{html.escape(op.id)}/decline\">"
            "<button type=\"submit\" id=\"decline\">Decline</button></form>"))

    def act(self, op_id: str, verb: str) -> Reply:
        op = self._find(op_id)
        if op is None or verb not in ("approve", "decline"):
            return _page(404, "No such payment", "<p>This payment does not exist.</p>")
        with self.store.lock:
            if op.status != "requires_action":
                return _page(409, "Payment", f"<p id=\"status\">This payment is already {op.status}.</p>")
            now = self.psp.clock()
            if verb == "approve":
                self.store.finalize(op, "succeeded", now)
            else:
                self.store.finalize(op, "failed", now, DECLINED_ACTION)
                op.error_message = "The customer declined the payment."
        self._notify(op)
        return _page(200, "Payment", f"<p id=\"status\">Payment {html.escape(op.status)}.</p>")

    def _find(self, op_id: str) -> Operation | None:
        op = self.store.find(op_id)
        return op if op is not None and op.channel in self.psp.channels else None


def _refusal(status: int, code: str, message: str) -> tuple[int, dict]:
    return status, {"error": {"code": code, "message": message}}


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, json.dumps({"error": {"code": code, "message": message}}).encode())


def _page(status: int, title: str, body: str) -> Reply:
    text = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return Reply(status, text.encode(), "text/html; charset=utf-8")
