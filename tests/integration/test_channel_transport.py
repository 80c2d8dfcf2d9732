"""The sandbox channel's client on the channel HTTP layer, against real sockets: a kept-alive
connection the channel drops as a request goes out is retried once on a new connection (with the
same Idempotency-Key), instead of leaving the payment's outcome unknown. (The layer's own tests,
with these servers: test_channel_http.py.)"""
from __future__ import annotations

import json
import socket
import threading

import pytest

from channels.base import ChannelTimeout
from channels.sandbox.client import SandboxClient


class LoopbackServer:
    """A raw HTTP/1.1 server on a free loopback port: each connection is served by ``_serve(conn,
    number)`` in a thread of its own (numbered from 1, in the order they were accepted)."""

    def __init__(self):
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn, number):
        raise NotImplementedError

    @staticmethod
    def read_request(reader) -> tuple[bytes, dict, bytes] | None:
        """The request line, the headers (names lower-cased) and the body; None at the end."""
        line = reader.readline()
        if not line:
            return None
        head = {}
        while (header := reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode().partition(":")
            head[name.strip().lower()] = value.strip()
        return line, head, reader.read(int(head.get("content-length", 0)))

    def close(self):
        self.sock.close()


class DroppingServer(LoopbackServer):
    """HTTP/1.1 with keep-alive; on a kept-alive connection it reads the next request and drops
    the connection without answering, ``drops`` times in all."""

    def __init__(self, drops: int):
        self.drops, self.seen = drops, []
        super().__init__()

    def _serve(self, conn, number):
        reader, served = conn.makefile("rb"), 0
        try:
            while (request := self.read_request(reader)) is not None:
                line, head, body = request
                self.seen.append((line.split()[0].decode(), head.get("idempotency-key"), body))
                if served and self.drops:
                    self.drops -= 1
                    self.on_drop()
                    return  # dropped as the request went out: no answer
                served += 1
                payload = json.dumps({"id": "sbx_1", "status": "succeeded"}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        finally:
            conn.close()

    def on_drop(self):
        pass


@pytest.fixture
def server():
    made = []

    def make(drops):
        made.append(DroppingServer(drops))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_a_dropped_kept_alive_connection_is_retried_once_with_the_same_key(server):
    s = server(drops=1)
    client = SandboxClient(s.url, "sandbox", "secret", timeout_ms=2000)
    assert client.post("/charges", {"amount": 1}, "att_1")[0] == 200  # opens the kept-alive connection
    status, body = client.post("/charges", {"amount": 2}, "att_2")  # dropped, then sent again
    assert (status, body["status"]) == (200, "succeeded")
    assert [key for _, key, _ in s.seen] == ["att_1", "att_2", "att_2"]


class SilentServer(DroppingServer):
    """Reads each request and drops the connection without answering."""

    def _serve(self, conn, number):
        reader = conn.makefile("rb")
        line = reader.readline()
        if line:
            self.seen.append((line.split()[0].decode(), None, b""))
        conn.close()


def test_dropped_again_on_the_new_connection_is_an_unknown_outcome_for_a_post():
    s = SilentServer(drops=0)
    try:
        client = SandboxClient(s.url, "sandbox", "secret", timeout_ms=2000)
        with pytest.raises(ChannelTimeout):  # it may have been received: never re-routed, queried later
            client.post("/charges", {"amount": 3}, "att_3")
        assert len(s.seen) == 2  # sent, dropped, sent once more, dropped
    finally:
        s.close()


class DropThenAnswer(DroppingServer):
    """Serves the first request of the first connection; drops the next one (it may have been
    processed); every later connection answers ``status``, or is refused when ``status`` is None."""

    def __init__(self, status: int | None):
        self.status = status
        super().__init__(drops=1)

    def _serve(self, conn, number):
        if number == 1:
            return super()._serve(conn, number)
        self.read_request(conn.makefile("rb"))
        conn.sendall(b"HTTP/1.1 %d Unavailable\r\nContent-Length: 2\r\n\r\n{}" % self.status)
        conn.close()


@pytest.mark.parametrize("status", [503, 429, 409])
def test_after_a_dropped_post_a_failed_retry_is_an_unknown_outcome_never_a_refusal(server, status):
    """The dropped POST may have charged: a 5xx/429 (or any non-2xx) on the retry must not make it
    look 'proven not charged', which would fail over to another channel and charge twice."""
    s = DropThenAnswer(status)
    try:
        client = SandboxClient(s.url, "sandbox", "secret", timeout_ms=2000)
        client.post("/charges", {"amount": 1}, "att_1")
        with pytest.raises(ChannelTimeout):
            client.post("/charges", {"amount": 2}, "att_2")
    finally:
        s.close()


class DropThenRefuse(DroppingServer):
    def on_drop(self):
        self.sock.shutdown(socket.SHUT_RDWR)  # stop listening: from now on, new connections are refused
        self.sock.close()


def test_after_a_dropped_post_a_refused_retry_is_an_unknown_outcome():
    s = DropThenRefuse(drops=1)
    client = SandboxClient(s.url, "sandbox", "secret", timeout_ms=2000)
    client.post("/charges", {"amount": 1}, "att_1")
    with pytest.raises(ChannelTimeout):
        client.post("/charges", {"amount": 2}, "att_2")
    s.close()


class ScriptedServer(LoopbackServer):
    """Answers each request on each connection with the next of ``answers`` (raw bytes; None:
    say nothing and hold the connection), counting connections."""

    def __init__(self, answers: list[bytes | None], idle_close: float | None = None):
        self.answers, self.requests = list(answers), []
        self.idle_close = idle_close  # close a kept-alive connection idle this long, as servers do
        super().__init__()

    def _serve(self, conn, number):
        conn.settimeout(self.idle_close)
        reader = conn.makefile("rb")
        try:
            while self.answers:
                try:
                    request = self.read_request(reader)
                except TimeoutError:
                    return  # idle too long: closed
                if request is None:
                    return
                line, head, body = request
                self.requests.append((line.decode().strip(), head, body))
                answer = self.answers.pop(0)
                if answer is None:
                    threading.Event().wait(5)
                    return
                conn.sendall(answer)
                if b"Connection: close" in answer or b"HTTP/1.0" in answer:
                    return
        finally:
            conn.close()


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def _sandbox_channel(url: str, secret: str = "secret"):
    from channels.config import ChannelSpec
    from channels.sandbox.adapter import SandboxChannel

    spec = ChannelSpec("sbx", "sandbox", ("card",), ("USD",), ("payment",), timeout_ms=2000,
                       config={"base_url": url})
    return SandboxChannel(spec, secret)


@pytest.mark.parametrize("reference,segment", [
    ("abc/../x?y#z", "abc%2F..%2Fx%3Fy%23z"),
    ("abc\r\nX-Injected: 1", "abc%0D%0AX-Injected%3A%201"),
])
def test_a_channel_reference_reaches_the_channel_as_one_encoded_path_segment(reference, segment):
    """Contract §4: every value placed in a URL is encoded. A reference the channel gave us can
    neither walk to another resource nor add a query, a fragment, a header or a request."""
    answer = json.dumps({"id": "sbx_1", "status": "succeeded"}).encode()
    s = ScriptedServer([_ok(answer), _ok(answer)])
    try:
        channel = _sandbox_channel(s.url)
        assert channel.query("pay_1", reference).status == "succeeded"
        assert channel.query(reference).status == "succeeded"  # our reference goes in the query string
        (line, head, body), (line2, head2, _) = s.requests
        assert line == f"GET /v1/channels/sbx/operations/{segment} HTTP/1.1"
        assert line2 == f"GET /v1/channels/sbx/operations?reference={segment.replace('%20', '+')} HTTP/1.1"
        assert "x-injected" not in head and "x-injected" not in head2 and body == b""
        assert s.connections == 1  # one kept-alive connection: nothing desynchronised it
    finally:
        s.close()


def test_a_credential_with_crlf_fails_the_call_as_never_sent():
    """A merchant's channel credentials become the Authorization header: CR LF in them cannot add
    a header; the call fails before sending, as a never-sent fault (the router may fail over)."""
    from channels.base import ChannelUnavailable, ChargeRequest

    s = ScriptedServer([_ok(b"{}")])
    try:
        channel = _sandbox_channel(s.url, secret="key_1\r\nX-Injected: 1")
        with pytest.raises(ChannelUnavailable, match="refused before sending"):
            channel.charge(ChargeRequest(operation="payment", reference="pay_1", amount=1000, currency="USD",
                                         payment_method={"type": "card"}, callback_url="http://127.0.0.1/cb",
                                         idempotency_key="att_1"))
        assert s.connections == 0 and s.requests == []
    finally:
        s.close()
