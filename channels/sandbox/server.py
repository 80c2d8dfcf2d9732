"""The sandbox PSP: a separate HTTP service simulating a payment provider (contract §4).

Endpoints (channel id in the path; ``Authorization: Bearer <channel secret>`` on /v1;
``Idempotency-Key`` on every POST, same key + same body → the same operation):

- ``POST /v1/channels/<id>/charges``  ``{operation, reference, amount, currency, payment_method, callback_url?}``
- ``POST /v1/channels/<id>/refunds``  ``{reference, payment, amount, currency, callback_url?}``
- ``POST /v1/channels/<id>/payouts``  ``{reference, amount, currency, destination, callback_url?}``
- ``GET  /v1/channels/<id>/operations/<sbx_id>`` and ``GET /v1/channels/<id>/operations?reference=<our id>``
- ``GET  /statements/YYYY-MM-DD?channel=<id>`` → CSV (no auth: a sandbox convenience)
- ``GET  /healthz``

Several channel instances share one process; the channel id selects secret, cost and timeout.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from app.domain.money import CURRENCY_EXPONENTS, MAX_AMOUNT
from channels.config import (
    ChannelConfigError,
    ChannelSpec,
    StoredSecrets,
    needs_generated_secret,
    read_channels_file,
    resolve_secret,
)
from channels.registry import resolve_adapter
from channels.sandbox.callbacks import CallbackSender
from channels.sandbox.httpd import HTTPServer, Reply, Request
from channels.sandbox.outcomes import outcome_for
from channels.sandbox.store import Operation, Store, rfc3339

log = logging.getLogger("payrouter.sandbox")
TIMEOUT_HEADER = "X-Sandbox-Timeout-Ms"  # the adapter tells its timeout (for outcome 54)
STATEMENT_HEADER = ["channel_reference", "operation", "amount", "currency", "status", "fee", "settled_at"]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Served:
    spec: ChannelSpec
    secret: str


def served_channels(channels_path=None, env: Mapping[str, str] | None = None,
                    stored: StoredSecrets | None = None) -> dict[str, Served]:
    """The channels of the file whose adapter is the sandbox one, with their secrets: resolved as
    the router resolves them, a generated one read from the router's database (``stored``, by
    default app.channel_secrets on the configured database)."""
    from channels.sandbox.adapter import SandboxChannel

    served = {}
    for spec in read_channels_file(channels_path, env):
        try:
            cls = resolve_adapter(spec.adapter)
        except ChannelConfigError:
            continue
        if issubclass(cls, SandboxChannel):
            if stored is None and needs_generated_secret(spec, env):
                from app.channel_secrets import StoredChannelSecrets

                stored = StoredChannelSecrets()
            served[spec.id] = Served(spec, resolve_secret(spec, env, stored))
    return served


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _json(status: int, payload: dict, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode(), headers=headers or {})


class SandboxPSP:
    """The sandbox's routes: ``handle(Request) -> Reply``. ``hang_extra``: seconds beyond a
    channel's timeout that outcome 54 waits."""

    def __init__(self, channels_path=None, *, env: Mapping[str, str] | None = None,
                 stored: StoredSecrets | None = None, callback_delay: float = 1.0,
                 hang_extra: float = 2.0, duplicate_gap: float = 0.2,
                 retry_delays: tuple[float, ...] = (0.5, 1, 2, 4, 8), clock: Callable[[], dt.datetime] = _utcnow):
        self.channels = served_channels(channels_path, env, stored)
        self.store = Store()
        self.clock = clock
        self.hang_extra = hang_extra
        self.sender = CallbackSender(self.store, clock, callback_delay, duplicate_gap, retry_delays)
        self._auth = {cid: f"Bearer {served.secret}".encode() for cid, served in self.channels.items()}

    def handle(self, request: Request) -> Reply:
        try:
            reply = self._route(request)
        except ApiError as exc:
            reply = _json(exc.status, {"error": {"code": exc.code, "message": exc.message}})
        except Exception:  # noqa: BLE001 - a bug in a route: 500, with the request id like any answer
            log.exception("sandbox: %s %s failed", request.method, request.path)
            reply = _json(500, {"error": {"code": "internal_error", "message": "sandbox error"}})
        request_id = request.header("X-Request-Id")
        if request_id:
            reply.headers["X-Request-Id"] = request_id
        return reply

    def _route(self, request: Request) -> Reply:
        parts = request.path.strip("/").split("/")
        method = request.method
        if parts[:2] == ["v1", "channels"] and len(parts) in (4, 5):
            cid, verb = parts[2], parts[3]
            if len(parts) == 4 and verb in ("charges", "refunds", "payouts"):
                _allow(method, "POST")
                return getattr(self, verb)(request, self.channel(request, cid), self.body(request))
            if verb == "operations":
                _allow(method, "GET")
                self.channel(request, cid)
                if len(parts) == 5:
                    op = self.store.get(cid, parts[4])
                else:
                    op = self.store.by_reference(cid, request.query.get("reference", ""))
                if op is None:
                    raise ApiError(404, "operation_not_found", "no such operation")
                return _json(200, self.store.view(op))
        if len(parts) == 2 and parts[0] == "statements":
            _allow(method, "GET")
            return self.statement(parts[1], request.query.get("channel", ""))
        if parts == ["healthz"]:
            _allow(method, "GET")
            return _json(200, {"channels": sorted(self.channels), "ok": True})
        raise ApiError(404, "not_found", f"no route {request.path}")

    def channel(self, request: Request | None, cid: str) -> Served:
        served = self.channels.get(cid)
        if served is None:
            raise ApiError(404, "unknown_channel", f"no sandbox channel {cid!r}")
        if request is not None:
            given = request.header("Authorization").encode()
            if not hmac.compare_digest(given, self._auth[cid]):
                raise ApiError(401, "authentication_failed", "missing or wrong channel secret")
        return served

    @staticmethod
    def body(request: Request) -> dict:
        try:
            data = json.loads(request.body) if request.body else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_request", "a JSON object body is required")
        return data

    @staticmethod
    def check_money(data: dict, served: Served) -> None:
        amount = data.get("amount")
        if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
            raise ApiError(400, "invalid_amount", "amount must be a positive integer in minor units")
        if data.get("currency") not in CURRENCY_EXPONENTS:
            raise ApiError(400, "invalid_currency", "unknown currency")
        if data["currency"] not in served.spec.currencies:
            raise ApiError(422, "unsupported_currency", f"channel does not accept {data['currency']}")
        if not isinstance(data.get("reference"), str) or not data["reference"]:
            raise ApiError(400, "invalid_request", "reference is required")
        if data.get("callback_url") is not None and not isinstance(data["callback_url"], str):
            raise ApiError(400, "invalid_request", "callback_url must be a string")

    def submit(self, request: Request, served: Served, data: dict, kind: str,
               validate: Callable[[], str | None] = lambda: None) -> Reply:
        """Idempotent create; runs the outcome table for a new operation."""
        key = request.header("Idempotency-Key")
        if not key:
            raise ApiError(400, "idempotency_key_missing", "Idempotency-Key header is required")
        fingerprint = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        outcome = outcome_for(data["amount"])
        store = self.store
        with store.lock:
            found = store.by_key(served.spec.id, key)
            if found:
                if found[0] != fingerprint:
                    raise ApiError(409, "idempotency_conflict", "Idempotency-Key reused with a different body")
                return _json(200, store.view(found[1]), {"Idempotent-Replayed": "true"})
            if outcome.http_error:
                raise ApiError(500, "internal_error", "simulated processor failure (amount ending in 55)")
            payment = validate()
            now = self.clock()
            op = Operation(channel=served.spec.id, operation=kind, reference=data["reference"],
                           amount=data["amount"], currency=data["currency"], status=outcome.initial,
                           created_at=now, error_code=outcome.error_code, payment=payment,
                           callback_url=data.get("callback_url"), request_id=request.header("X-Request-Id") or None)
            if outcome.initial != "processing":
                op.settled_at = now
            if outcome.error_code and outcome.initial == "failed":
                op.error_message = "The card was declined."
            store.add(op, key, fingerprint)
            view = op.to_json()
        if outcome.initial == "processing":
            self.sender.schedule(op, served.secret, outcome.final, outcome.error_code, outcome.callbacks)
        if outcome.hang:  # outlast both our configured timeout and the one the caller says it uses
            told = request.header(TIMEOUT_HEADER)
            told_ms = min(int(told), 120_000) if told.isdigit() else 0
            time.sleep(max(served.spec.timeout_ms, told_ms) / 1000 + self.hang_extra)
        return _json(200, view)

    def charges(self, request: Request, served: Served, data: dict) -> Reply:
        self.check_money(data, served)
        if data.get("operation") not in ("payment", "topup"):
            raise ApiError(400, "invalid_request", "operation must be payment or topup")
        if not isinstance(data.get("payment_method"), dict):
            raise ApiError(400, "invalid_request", "payment_method object is required")
        return self.submit(request, served, data, data["operation"])

    def refunds(self, request: Request, served: Served, data: dict) -> Reply:
        self.check_money(data, served)
        cid = served.spec.id

        def validate() -> str:
            paid = self.store.get(cid, str(data.get("payment")))
            if paid is None or paid.operation not in ("payment", "topup"):
                raise ApiError(422, "payment_not_found", "no such payment on this channel")
            if paid.status != "succeeded":
                raise ApiError(422, "payment_not_refundable", f"payment is {paid.status}")
            if paid.currency != data["currency"]:
                raise ApiError(422, "currency_mismatch", "refund currency differs from the payment's")
            if self.store.refunded(paid.id) + data["amount"] > paid.amount:
                raise ApiError(422, "amount_too_large", "refunds would exceed the payment amount")
            return paid.id

        return self.submit(request, served, data, "refund", validate)

    def payouts(self, request: Request, served: Served, data: dict) -> Reply:
        self.check_money(data, served)
        if not isinstance(data.get("destination"), dict):
            raise ApiError(400, "invalid_request", "destination object is required")
        return self.submit(request, served, data, "withdrawal")

    def statement(self, day: str, channel_id: str) -> Reply:
        try:
            date = dt.date.fromisoformat(day)
        except ValueError:
            raise ApiError(400, "invalid_date", "date must be YYYY-MM-DD") from None
        served = self.channel(None, channel_id)  # no auth: a sandbox convenience
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(STATEMENT_HEADER)
        for op in self.store.settled_on(served.spec.id, date):
            fee = served.spec.cost.fee(op.amount) if op.status == "succeeded" else 0
            writer.writerow([op.id, op.operation, op.amount, op.currency, op.status, fee, rfc3339(op.settled_at)])
        return Reply(200, out.getvalue().encode(), "text/csv; charset=utf-8")

    def close(self) -> None:
        self.sender.close()


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise ApiError(405, "method_not_allowed", f"use {allowed}")


class SandboxServer:
    """The sandbox served in a background thread (tests, the demo): ``with SandboxServer(...) as s``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, channels_path=None, **options):
        self.psp = SandboxPSP(channels_path, **options)
        self._server = HTTPServer(host, port, self.psp.handle)
        self.port = self._server.port
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> "SandboxServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.psp.close()
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run(host: str = "127.0.0.1", port: int = 8090, channels_path=None, **options) -> None:
    """Serve the sandbox in the foreground until stopped (``payrouter sandbox --port``): one process,
    as the operations live in its memory, with a thread per kept-alive connection. Idle connections
    are kept 15 s (the client reuses one only within 1.5 s, and checks it is still open)."""
    channels_path = channels_path or os.environ.get("PAYROUTER_CHANNELS")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    psp = SandboxPSP(channels_path, **options)
    server = HTTPServer(host, port, psp.handle, idle_timeout=15.0)
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    log.info("sandbox PSP on http://%s:%s serving %s", host, server.port, ", ".join(psp.channels))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.request_stop()
    finally:
        psp.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m channels.sandbox.server [--host H] [--port P] [--channels FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="payrouter sandbox", description="the sandbox PSP")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--channels", default=None, help="channels file (default: PAYROUTER_CHANNELS or built-in)")
    args = parser.parse_args(argv)
    run(args.host, args.port, args.channels)


if __name__ == "__main__":
    main()
