"""Background delivery of the sandbox's signed callbacks to the router.

Each processing operation gets a daemon thread: wait ``delay``, settle the operation,
then POST the event (``deliveries`` times, same event id) to its ``callback_url``,
retrying a delivery on a non-2xx answer or a network error.
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
from typing import Callable

import requests

from channels.sandbox.signing import signed_headers
from channels.sandbox.store import Operation, Store, rfc3339

log = logging.getLogger("payrouter.sandbox.callbacks")


class CallbackSender:
    def __init__(self, store: Store, clock: Callable, delay: float = 1.0, duplicate_gap: float = 0.2,
                 retry_delays: tuple[float, ...] = (0.5, 1, 2, 4, 8), post_timeout: float = 5.0):
        self.store = store
        self.clock = clock
        self.delay = delay
        self.duplicate_gap = duplicate_gap
        self.retry_delays = retry_delays
        self.post_timeout = post_timeout
        self.stopped = threading.Event()

    def schedule(self, op: Operation, secret: str, final: str, error_code: str | None, deliveries: int) -> None:
        thread = threading.Thread(target=self._run, args=(op, secret, final, error_code, deliveries),
                                  name=f"sandbox-callback-{op.id}", daemon=True)
        thread.start()

    def close(self) -> None:
        """Stop pending deliveries (tests, shutdown)."""
        self.stopped.set()

    def notify(self, op: Operation, secret: str) -> None:
        """Post the operation's status as it is now, once (a customer's answer, an expiry)."""
        thread = threading.Thread(target=self._post, args=(op, secret, 1), name=f"sandbox-callback-{op.id}",
                                  daemon=True)
        thread.start()

    def _run(self, op: Operation, secret: str, final: str, error_code: str | None, deliveries: int) -> None:
        if self.stopped.wait(self.delay):
            return
        self.store.finalize(op, final, self.clock(), error_code)
        self._post(op, secret, deliveries)

    def _post(self, op: Operation, secret: str, deliveries: int) -> None:
        if not op.callback_url:
            return
        kind = "dispute" if op.operation == "dispute" else "operation"
        event = {"id": "sbxevt_" + secrets.token_hex(10), "type": f"{kind}.{op.status}",
                 "created_at": rfc3339(self.clock()), "channel": op.channel, "data": self.store.view(op)}
        body = json.dumps(event, separators=(",", ":")).encode()
        for n in range(deliveries):
            if n and self.stopped.wait(self.duplicate_gap):
                return
            self._deliver(op, secret, body)

    def _deliver(self, op: Operation, secret: str, body: bytes) -> bool:
        for attempt, pause in enumerate((0.0, *self.retry_delays)):
            if pause and self.stopped.wait(pause):
                return False
            headers = {"Content-Type": "application/json", **signed_headers(secret, body)}
            if op.request_id:
                headers["X-Request-Id"] = op.request_id
            try:
                resp = requests.post(op.callback_url, data=body, headers=headers, timeout=self.post_timeout)
                if 200 <= resp.status_code < 300:
                    return True
                log.warning("callback %s attempt %d: HTTP %s", op.id, attempt + 1, resp.status_code)
            except requests.RequestException as exc:
                log.warning("callback %s attempt %d failed: %s", op.id, attempt + 1, exc)
        return False
