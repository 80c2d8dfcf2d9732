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
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from flask import Flask, Response, g, jsonify, request
from werkzeug.serving import make_server

from app.domain.money import CURRENCY_EXPONENTS, MAX_AMOUNT
from channels.config import ChannelConfigError, ChannelSpec, read_channels_file, resolve_secret
from channels.registry import resolve_adapter
from channels.sandbox.callbacks import CallbackSender
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


def served_channels(channels_path=None, env: Mapping[str, str] | None = None) -> dict[str, Served]:
    """The channels of the file whose adapter is the sandbox one, with their secrets."""
    from channels.sandbox.adapter import SandboxChannel

    served = {}
    for spec in read_channels_file(channels_path, env):
        try:
            cls = resolve_adapter(spec.adapter)
        except ChannelConfigError:
            continue
        if issubclass(cls, SandboxChannel):
            served[spec.id] = Served(spec, resolve_secret(spec, cls.allows_dev_secret, env))
    return served


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_sandbox_app(channels_path=None, *, env: Mapping[str, str] | None = None, callback_delay: float = 1.0,
                       hang_extra: float = 2.0, duplicate_gap: float = 0.2,
                       retry_delays: tuple[float, ...] = (0.5, 1, 2, 4, 8),
                       clock: Callable[[], dt.datetime] = _utcnow) -> Flask:
    """The sandbox Flask app. ``hang_extra``: seconds beyond a channel's timeout that outcome 54 waits."""
    channels = served_channels(channels_path, env)
    store = Store()
    sender = CallbackSender(store, clock, callback_delay, duplicate_gap, retry_delays)
    app = Flask("payrouter_sandbox")
    app.extensions["sandbox"] = {"store": store, "sender": sender, "channels": channels}

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return jsonify(error={"code": exc.code, "message": exc.message}), exc.status

    def channel(cid: str, auth: bool = True) -> Served:
        served = channels.get(cid)
        if served is None:
            raise ApiError(404, "unknown_channel", f"no sandbox channel {cid!r}")
        if auth:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {served.secret}".encode()):
                raise ApiError(401, "authentication_failed", "missing or wrong channel secret")
        return served

    def body() -> dict:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_request", "a JSON object body is required")
        return data

    def check_money(data: dict, served: Served) -> None:
        amount = data.get("amount")
        if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
            raise ApiError(400, "invalid_amount", "amount must be a positive integer in minor units")
        if data.get("currency") not in CURRENCY_EXPONENTS:
            raise ApiError(400, "invalid_currency", "unknown currency")
        if data["currency"] not in served.spec.currencies:
            raise ApiError(422, "unsupported_currency", f"channel does not accept {data['currency']}")
        for name in ("reference",):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ApiError(400, "invalid_request", f"{name} is required")
        if data.get("callback_url") is not None and not isinstance(data["callback_url"], str):
            raise ApiError(400, "invalid_request", "callback_url must be a string")

    def submit(served: Served, data: dict, kind: str, validate: Callable[[], str | None] = lambda: None):
        """Idempotent create; runs the outcome table for a new operation."""
        key = request.headers.get("Idempotency-Key")
        if not key:
            raise ApiError(400, "idempotency_key_missing", "Idempotency-Key header is required")
        fingerprint = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        outcome = outcome_for(data["amount"])
        with store.lock:
            found = store.by_key(served.spec.id, key)
            if found:
                if found[0] != fingerprint:
                    raise ApiError(409, "idempotency_conflict", "Idempotency-Key reused with a different body")
                resp = jsonify(store.view(found[1]))
                resp.headers["Idempotent-Replayed"] = "true"
                return resp
            if outcome.http_error:
                raise ApiError(500, "internal_error", "simulated processor failure (amount ending in 55)")
            payment = validate()
            now = clock()
            op = Operation(channel=served.spec.id, operation=kind, reference=data["reference"],
                           amount=data["amount"], currency=data["currency"], status=outcome.initial,
                           created_at=now, error_code=outcome.error_code, payment=payment,
                           callback_url=data.get("callback_url"), request_id=request.headers.get("X-Request-Id"))
            if outcome.initial != "processing":
                op.settled_at = now
            if outcome.error_code and outcome.initial == "failed":
                op.error_message = "The card was declined."
            store.add(op, key, fingerprint)
        if outcome.initial == "processing":
            sender.schedule(op, served.secret, outcome.final, outcome.error_code, outcome.callbacks)
        if outcome.hang:  # outlast both our configured timeout and the one the caller says it uses
            told = request.headers.get(TIMEOUT_HEADER, "")
            told_ms = min(int(told), 120_000) if told.isdigit() else 0
            time.sleep(max(served.spec.timeout_ms, told_ms) / 1000 + hang_extra)
        return jsonify(store.view(op))

    @app.post("/v1/channels/<cid>/charges")
    def charges(cid: str):
        served, data = channel(cid), body()
        check_money(data, served)
        if data.get("operation") not in ("payment", "topup"):
            raise ApiError(400, "invalid_request", "operation must be payment or topup")
        if not isinstance(data.get("payment_method"), dict):
            raise ApiError(400, "invalid_request", "payment_method object is required")
        return submit(served, data, data["operation"])

    @app.post("/v1/channels/<cid>/refunds")
    def refunds(cid: str):
        served, data = channel(cid), body()
        check_money(data, served)

        def validate() -> str:
            paid = store.get(cid, str(data.get("payment")))
            if paid is None or paid.operation not in ("payment", "topup"):
                raise ApiError(422, "payment_not_found", "no such payment on this channel")
            if paid.status != "succeeded":
                raise ApiError(422, "payment_not_refundable", f"payment is {paid.status}")
            if paid.currency != data["currency"]:
                raise ApiError(422, "currency_mismatch", "refund currency differs from the payment's")
            if store.refunded(paid.id) + data["amount"] > paid.amount:
                raise ApiError(422, "amount_too_large", "refunds would exceed the payment amount")
            return paid.id

        return submit(served, data, "refund", validate)

    @app.post("/v1/channels/<cid>/payouts")
    def payouts(cid: str):
        served, data = channel(cid), body()
        check_money(data, served)
        if not isinstance(data.get("destination"), dict):
            raise ApiError(400, "invalid_request", "destination object is required")
        return submit(served, data, "withdrawal")

    @app.get("/v1/channels/<cid>/operations/<op_id>")
    def operation(cid: str, op_id: str):
        channel(cid)
        op = store.get(cid, op_id)
        if op is None:
            raise ApiError(404, "operation_not_found", "no such operation")
        return jsonify(store.view(op))

    @app.get("/v1/channels/<cid>/operations")
    def operation_by_reference(cid: str):
        channel(cid)
        op = store.by_reference(cid, request.args.get("reference", ""))
        if op is None:
            raise ApiError(404, "operation_not_found", "no operation with this reference")
        return jsonify(store.view(op))

    @app.get("/statements/<day>")
    def statement(day: str):
        try:
            date = dt.date.fromisoformat(day)
        except ValueError:
            raise ApiError(400, "invalid_date", "date must be YYYY-MM-DD") from None
        served = channel(request.args.get("channel", ""), auth=False)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(STATEMENT_HEADER)
        for op in store.settled_on(served.spec.id, date):
            fee = served.spec.cost.fee(op.amount) if op.status == "succeeded" else 0
            writer.writerow([op.id, op.operation, op.amount, op.currency, op.status, fee, rfc3339(op.settled_at)])
        return Response(out.getvalue(), mimetype="text/csv")

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True, channels=sorted(channels))

    @app.before_request
    def remember_request_id():
        g.request_id = request.headers.get("X-Request-Id")

    @app.after_request
    def echo_request_id(resp: Response):
        if g.get("request_id"):
            resp.headers["X-Request-Id"] = g.request_id
        return resp

    return app


class SandboxServer:
    """The sandbox served by a threaded werkzeug server (not the debug server) in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, channels_path=None, **options):
        self.app = create_sandbox_app(channels_path, **options)
        self._server = make_server(host, port, self.app, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> "SandboxServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.app.extensions["sandbox"]["sender"].close()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run(host: str = "127.0.0.1", port: int = 8090, channels_path=None, threads: int = 32, **options) -> None:
    """Serve the sandbox in the foreground until stopped (``payrouter sandbox --port``): gunicorn's
    threaded worker, so the router's kept-alive connections are kept (werkzeug's server, used by
    SandboxServer, closes every connection). One worker process, as the operations live in its memory;
    the app is built in that worker, so its callback threads run there. Idle connections are
    kept 15 s (the client reuses one only within 1.5 s, and checks it is still open)."""
    from app.server import serve

    channels_path = channels_path or os.environ.get("PAYROUTER_CHANNELS")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def load() -> Flask:
        app = create_sandbox_app(channels_path, **options)
        log.info("sandbox PSP on http://%s:%s serving %s", host, port, ", ".join(app.extensions["sandbox"]["channels"]))
        return app

    serve(load, host, port, workers=1, threads=threads, preload=False, keepalive=15)


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
