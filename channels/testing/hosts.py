"""The kit's own loopback hosts, which a channel under test is pointed at instead of its PSP:

- ``Host(answer)``: records the bytes of every request it reads, then sends ``answer`` (a whole
  HTTP response); with ``answer=None``, nothing at all until the caller hangs up (silence); with
  ``answer=b""``, nothing, closing the connection (dropped);
- ``CallbackReceiver``: records the callbacks a PSP posts (answering 200), by path;
- ``closed_url()``: a URL where nothing listens (connection refused).

Standard library only: a plugin's tests need nothing but the router and pytest.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nbusy"


def closed_url() -> str:
    """An http URL on a loopback port nothing listens on (a connection to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _read_request(reader) -> bytes | None:
    """One request as it came on the wire (head and body), None when the connection ended."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline(65537)
        if not line:
            return None
        head += line
        if head in (b"\r\n", b"\n"):  # a stray line break between requests
            head = b""
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return head + reader.read(length)
    body = b""
    while True:
        size_line = reader.readline(65537)
        body += size_line
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        body += reader.read(size + 2)
        if size == 0:
            return head + body


class _Closing:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Host(_Closing):
    """A loopback HTTP host recording every request (``requests``, raw bytes, in arrival order)."""

    def __init__(self, answer: bytes | None = REFUSAL):
        self.answer = answer
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, name="kit-host", daemon=True).start()

    def since(self, mark: int) -> list[bytes]:
        """The requests recorded after the first ``mark`` (``mark = len(host.requests)`` before a call)."""
        with self._lock:
            return self.requests[mark:]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name="kit-host-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            try:
                while (request := _read_request(reader)) is not None:  # kept alive: request after request
                    with self._lock:
                        self.requests.append(request)
                    if self.answer is None:
                        while conn.recv(4096):  # silence, until the caller gives up and hangs up
                            pass
                        return
                    if not self.answer:  # dropped: the connection closes with the request read, unanswered
                        return
                    conn.sendall(self.answer)
            except (OSError, ValueError):
                return

    def close(self) -> None:
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]  # as the router hands them to ``verify_callback`` (Title-Case names)
    body: bytes


class CallbackReceiver(_Closing):
    """Where a PSP under test posts its callbacks: ``url`` + any path; ``wait_for(path)``."""

    def __init__(self):
        self.deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # The router reads headers through werkzeug, which names them Title-Case.
                headers = {name.title(): value for name, value in self.headers.items()}
                with receiver._cond:
                    receiver.deliveries.append(Delivery(self.path, headers, body))
                    receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, name="kit-callbacks", daemon=True).start()

    def wait_for(self, path: str, timeout: float) -> Delivery:
        """The first callback posted to ``path``, waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for delivery in self.deliveries:
                    if delivery.path == path:
                        return delivery
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the PSP posted no callback to {path} within {timeout:g}s")
                self._cond.wait(left)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
