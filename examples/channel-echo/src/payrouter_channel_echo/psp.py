"""Echo Pay: a tiny made-up PSP, the fake this package's adapter is tested against (``echo-psp``
serves it for a demo). Its operations live in memory.

Every ``/v1`` request carries ``Echo-Key: <the channel's secret>`` (else 401); every POST an
``Idempotency-Key`` (the same key gets the first answer again).

- ``POST /v1/payments {amount, currency, ref, card_token?, notify_url?}`` →
  ``{payment_id, ref, amount, currency, state, reason?}``, ``state`` by the amount's last two digits:
  01 ``declined`` (``reason: do_not_honor``); 02 ``pending``, and about ``notify_delay_s`` later a
  signed notification says ``approved``; 03 ``approved``, answered only after ``hold_s``; 05 HTTP 503,
  nothing recorded; any other ``approved``.
- ``GET /v1/payments/<payment_id>``, ``GET /v1/payments?ref=<ref>`` → the payment, or 404.
- ``POST /v1/refunds {payment_id, amount, ref}`` → ``{refund_id, payment_id, amount, currency, state}``.
- ``GET /v1/settlements/YYYY-MM-DD`` → ``{lines: [{id, kind, amount, currency, state, fee, settled_at}]}``: every
  operation that became final that day, declined ones included (fee 0; an approved one's fee is 1 %).
- Notifications: ``POST notify_url {event_id, payment_id, ref, state}`` with ``Echo-Timestamp: <unix s>``
  and ``Echo-Signature: <hex HMAC-SHA256(secret, timestamp + "." + body)>``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import urllib.request
from http import HTTPStatus
from urllib.parse import parse_qs

from waitress.server import create_server


class Refused(Exception):
    def __init__(self, status: int, error: str):
        super().__init__(error)
        self.status, self.error = status, error


class EchoPSP:
    """Echo Pay on ``host:port`` (port 0: any free one), in a thread: ``with EchoPSP(secret) as psp``."""

    def __init__(self, secret: str, host: str = "127.0.0.1", port: int = 0, hold_s: float = 2.0,
                 notify_delay_s: float = 0.2):
        self.secret, self.hold_s, self.notify_delay_s = secret, hold_s, notify_delay_s
        self.operations: dict[str, dict] = {}  # payment_id / refund_id → the operation
        self.answers: dict[str, tuple[int, dict]] = {}  # Idempotency-Key → the first answer
        self.lock = threading.Lock()
        self._map: dict = {}  # waitress's dispatchers: the listener, its wake-up pipe, each connection
        self._server = create_server(self.app, map=self._map, host=host, port=port, threads=8, ident="echo-pay")
        self.url = f"http://{host}:{self._server.effective_port}"
        self._thread = threading.Thread(target=self._server.run, name="echo-pay", daemon=True)

    # ---- HTTP ----------------------------------------------------------------------------------

    def app(self, environ, start_response):
        try:
            status, body = self.route(environ)
        except Refused as exc:
            status, body = exc.status, {"error": exc.error}
        data = json.dumps(body).encode()
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def route(self, environ) -> tuple[int, dict]:
        key = environ.get("HTTP_ECHO_KEY", "").encode("latin-1")
        if not hmac.compare_digest(key, self.secret.encode()):
            raise Refused(401, "bad_key")
        method, parts = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "").strip("/").split("/")
        if method == "POST" and parts in (["v1", "payments"], ["v1", "refunds"]):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                data = json.loads(environ["wsgi.input"].read(length))
            except ValueError:
                raise Refused(400, "invalid_json") from None
            return self.once(environ.get("HTTP_IDEMPOTENCY_KEY", ""), self.pay if parts[1] == "payments"
                             else self.refund, data)
        if method == "GET" and parts == ["v1", "payments"]:
            ref = parse_qs(environ.get("QUERY_STRING", "")).get("ref", [""])[0]
            return self.find(lambda op: op["kind"] == "payment" and op["ref"] == ref)
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "payments"]:
            return self.find(lambda op: op["kind"] == "payment" and op["payment_id"] == parts[2])
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "settlements"]:
            return 200, {"lines": self.settled_on(parts[2])}
        raise Refused(404, "no_such_route")

    def once(self, key: str, operation, data: dict) -> tuple[int, dict]:
        """Same Idempotency-Key → the first answer (a 503 is not an answer: nothing was recorded)."""
        if not key:
            raise Refused(400, "idempotency_key_required")
        with self.lock:
            if key in self.answers:
                return self.answers[key]
            status, body, hold = operation(data)
            if status != 503:
                self.answers[key] = status, body
        if hold:
            time.sleep(self.hold_s)  # the answer comes after the caller gave up: its outcome is unknown
        return status, body

    # ---- operations (under self.lock) -------------------------------------------------------------

    def pay(self, data: dict) -> tuple[int, dict, bool]:
        amount, currency, ref = data.get("amount"), data.get("currency"), data.get("ref")
        if type(amount) is not int or amount <= 0 or not isinstance(currency, str) or not isinstance(ref, str):
            raise Refused(400, "invalid_request")
        last = amount % 100
        if last == 5:
            return 503, {"error": "try_later"}, False
        op = {"kind": "payment", "payment_id": "ep_" + secrets.token_hex(8), "ref": ref, "amount": amount,
              "currency": currency, "state": "approved", "refunded": 0}
        if last == 1:
            op.update(state="declined", reason="do_not_honor")
        elif last == 2:
            op["state"] = "pending"
            timer = threading.Timer(self.notify_delay_s, self.notify, (op, data.get("notify_url")))
            timer.daemon = True
            timer.start()
        self.record(op)
        return 200, self.view(op), last == 3

    def refund(self, data: dict) -> tuple[int, dict, bool]:
        paid = self.operations.get(str(data.get("payment_id")))
        amount = data.get("amount")
        if paid is None or paid["kind"] != "payment":
            raise Refused(404, "unknown_payment")
        left = paid["amount"] - paid["refunded"]
        if paid["state"] != "approved" or type(amount) is not int or not 0 < amount <= left:
            raise Refused(400, "not_refundable")
        paid["refunded"] += amount
        op = {"kind": "refund", "refund_id": "er_" + secrets.token_hex(8), "payment_id": paid["payment_id"],
              "ref": str(data.get("ref")), "amount": amount, "currency": paid["currency"], "state": "approved"}
        self.record(op)
        return 200, self.view(op), False

    def record(self, op: dict) -> None:
        if op["state"] != "pending":
            op["settled_at"] = dt.datetime.now(dt.timezone.utc)
        self.operations[op.get("refund_id") or op["payment_id"]] = op

    def find(self, match) -> tuple[int, dict]:
        with self.lock:
            for op in self.operations.values():
                if match(op):
                    return 200, self.view(op)
        raise Refused(404, "unknown_payment")

    def settled_on(self, day: str) -> list[dict]:
        with self.lock:
            return [{"id": op.get("refund_id") or op["payment_id"], "kind": op["kind"], "amount": op["amount"],
                     "currency": op["currency"], "state": op["state"],
                     "fee": op["amount"] // 100 if op["state"] == "approved" else 0,
                     "settled_at": op["settled_at"].isoformat()}
                    for op in self.operations.values()
                    if op.get("settled_at") and op["settled_at"].date().isoformat() == day]

    @staticmethod
    def view(op: dict) -> dict:
        """What Echo Pay answers about an operation (never the card token: it keeps none)."""
        return {k: op[k] for k in ("payment_id", "refund_id", "ref", "amount", "currency", "state", "reason")
                if k in op}

    def notify(self, op: dict, url: str | None) -> None:
        with self.lock:
            op["state"] = "approved"
            self.record(op)
            event = {"event_id": "ev_" + secrets.token_hex(8), "payment_id": op["payment_id"], "ref": op["ref"],
                     "state": op["state"]}
        if not url:
            return
        body, stamp = json.dumps(event).encode(), str(int(time.time()))
        signature = hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(url, body, method="POST", headers={
            "Content-Type": "application/json", "Echo-Timestamp": stamp, "Echo-Signature": signature})
        try:
            with urllib.request.urlopen(request, timeout=5):
                pass
        except OSError:
            pass  # a fake: one attempt (a real PSP retries; the router also queries what stays pending)

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "EchoPSP":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection from the serving thread; its loop then ends."""
        self._server.trigger.pull_trigger(self._close)
        self._thread.join(timeout=5)
        self._server.task_dispatcher.shutdown(timeout=1)

    def _close(self) -> None:
        for dispatcher in list(self._map.values()):
            if dispatcher is not self._server.trigger:
                dispatcher.close()
        self._server.close()

    def __enter__(self) -> "EchoPSP":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    """``echo-psp [--host H] [--port P]``: Echo Pay in the foreground; the secret from ``ECHO_SECRET``."""
    import argparse

    parser = argparse.ArgumentParser(prog="echo-psp", description="Echo Pay, a fake PSP")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    psp = EchoPSP(os.environ["ECHO_SECRET"], args.host, args.port)
    print(f"Echo Pay on {psp.url}", flush=True)
    psp._server.run()
