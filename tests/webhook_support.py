"""Shared pieces of the webhook tests: a real local HTTP receiver, the webhook config, a worker pass.
The fixtures that use them live in tests/integration/conftest.py."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rq import Queue, SimpleWorker

from app.adapters import jobs
from app.adapters.redis_conn import get_redis
from app.services.webhooks import relay


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records every POST and answers from a script."""

    def __init__(self, statuses=(), default: int = 200, delay: float = 0.0):
        self.statuses, self.default, self.delay = list(statuses), default, delay
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers.items()),
                                              "body": body})
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def webhook_config(base, **changes):
    return base.with_(allow_private_webhooks=True, webhook_retry_schedule=(0, 0, 0), **changes)


def work(connection=None) -> None:
    """Run every queued webhook job with a real RQ SimpleWorker in burst mode."""
    connection = connection or get_redis()
    SimpleWorker([Queue(jobs.WEBHOOKS, connection=connection)], connection=connection).work(burst=True)


def pump(connection=None) -> dict:
    """One relay pass, then the worker until the queue is empty."""
    result = relay.run_once()
    work(connection)
    return result


def create_endpoint(api, url: str, events=("*",)) -> dict:
    response = api.post("/v1/webhook_endpoints", {"url": url, "enabled_events": list(events)})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def transfer(api, amount: int = 100) -> tuple[dict, str]:
    """A transfer (which writes a transfer.succeeded event); returns it and its X-Request-Id."""
    a, b = api.account(funded=10_000), api.account()
    response = api.post("/v1/transfers", api.transfer_body(a["id"], b["id"], amount))
    assert response.status_code == 201, response.get_json()
    return response.get_json(), response.headers["X-Request-Id"]
