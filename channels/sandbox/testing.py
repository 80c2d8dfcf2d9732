"""Test helpers for anything that drives the sandbox over real HTTP (unit, integration, e2e).

- ``write_channels_file(path, base_url, timeout_ms)``: a channels file with the three default
  instances pointing at a sandbox on ``base_url``, with a short timeout.
- ``CallbackReceiver``: a tiny threaded HTTP server recording the callbacks posted to it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

FAST_SANDBOX_OPTIONS = {"callback_delay": 0.2, "hang_extra": 0.5, "duplicate_gap": 0.05, "dispute_delay": 0.3,
                        "retry_delays": (0.1, 0.2, 0.4)}
# The secret_env values of write_channels_file's channels, for tests that run the sandbox and its
# adapters without a database (elsewhere a test channel runs on its generated secret).
EXPLICIT_SECRETS = {"SANDBOX_SECRET": "sandbox-test-secret", "ACQ_ALPHA_SECRET": "alpha-test-secret",
                    "ACQ_BETA_SECRET": "beta-test-secret"}


def write_channels_file(path: Path, base_url: str, timeout_ms: int = 400) -> Path:
    """Write a channels file for tests (channels: sandbox, acq_alpha, acq_beta)."""
    common = {"adapter": "sandbox", "operations": ["payment", "topup", "refund", "withdrawal"],
              "timeout_ms": timeout_ms}
    channels = [
        {"id": "sandbox", "methods": ["card", "wallet", "bank_transfer"],
         "currencies": ["USD", "EUR", "GBP", "JPY", "KWD", "CNY"], "cost": {"percent": "2.0", "fixed": 10}},
        {"id": "acq_alpha", "methods": ["card", "wallet"], "currencies": ["USD", "EUR"],
         "cost": {"percent": "1.8", "fixed": 20}},
        {"id": "acq_beta", "methods": ["card"], "currencies": ["USD", "EUR", "GBP"],
         "cost": {"percent": "1.5", "fixed": 25}},
    ]
    for ch in channels:
        ch.update(common)
        ch["config"] = {"base_url": base_url, "secret_env": ch["id"].upper() + "_SECRET"}
    path.write_text(yaml.safe_dump({"channels": channels}, sort_keys=False))
    return path


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict
    body: bytes
    status: int  # what the receiver answered


class CallbackReceiver:
    """Records POSTs; answers 500 to the first ``fail_first`` of them, 200 afterwards."""

    def __init__(self, host: str = "127.0.0.1", fail_first: int = 0):
        self.fail_first = fail_first
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._server = make_server(host, 0, self._app, threaded=True)
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="callback-receiver", daemon=True)

    @Request.application
    def _app(self, request: Request) -> Response:
        with self._cond:
            status = 500 if self.fail_first > 0 else 200
            self.fail_first -= 1 if self.fail_first > 0 else 0
            self.received.append(Received(request.path, dict(request.headers), request.get_data(), status))
            self._cond.notify_all()
        return Response("ok" if status == 200 else "boom", status=status)

    def for_path(self, path: str, status: int | None = 200) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.path == path and (status is None or r.status == status)]

    def wait_for(self, path: str, count: int = 1, timeout: float = 5.0, status: int | None = 200) -> list[Received]:
        """Wait until ``count`` callbacks reached ``path`` (answered ``status``); return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.for_path(path, status)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.for_path(path, status))}/{count} callbacks reached {path}")
                self._cond.wait(left)
            return self.for_path(path, status)

    def start(self) -> "CallbackReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "CallbackReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
