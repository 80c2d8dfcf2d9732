"""The channel HTTP layer (channels.http) against real sockets and servers: what it classifies as
never sent (safe to fail over) and as unknown (query later), connection reuse, framing, TLS
verification, and answers streamed without a size cap."""
from __future__ import annotations

import datetime as dt
import ssl
import threading

import pytest

from channels.base import ChannelTimeout, ChannelUnavailable, RequestNotSent
from channels.http import MAX_BUFFERED_BODY, ChannelHTTP, for_channel
from tests.integration.test_channel_transport import LoopbackServer, ScriptedServer, _ok
from tests.live import free_port

KEY = {"Idempotency-Key": "att_1"}


def layer(url: str, timeout_s: float = 2.0, **options) -> ChannelHTTP:
    return ChannelHTTP("chan", url, connect_timeout_s=timeout_s, read_timeout_s=timeout_s, **options)


@pytest.fixture
def scripted():
    made = []

    def make(answers, **options):
        made.append(ScriptedServer(answers, **options))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_connection_refused_is_never_sent():
    with pytest.raises(ChannelUnavailable, match="unreachable"):
        layer(f"http://127.0.0.1:{free_port()}").request("POST", "/charges", headers=KEY, body=b"{}")


def test_a_connect_timeout_is_never_sent():
    """A listener whose backlog is full accepts no connection: the connect times out."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = []
    try:
        for _ in range(16):  # until the backlog is full and a connect times out
            try:
                filler.append(socket.create_connection(listener.getsockname(), timeout=0.2))
            except OSError:
                break
        http = ChannelHTTP("chan", f"http://127.0.0.1:{listener.getsockname()[1]}", connect_timeout_s=0.2,
                           read_timeout_s=5)
        with pytest.raises(ChannelUnavailable, match="unreachable"):
            http.request("POST", "/charges", headers=KEY, body=b"{}")
    finally:
        for sock in filler:
            sock.close()
        listener.close()


def test_silence_after_the_request_went_out_is_unknown(scripted):
    s = scripted([None])
    with pytest.raises(ChannelTimeout, match="no answer within 0.3s"):
        layer(s.url, 0.3).request("POST", "/charges", headers=KEY, body=b"{}")
    assert [line for line, _, _ in s.requests] == ["POST /charges HTTP/1.1"]  # it was sent


class Closing(LoopbackServer):
    """Reads each request and closes the connection without a word."""

    def __init__(self):
        self.requests = []
        super().__init__()

    def _serve(self, conn, number):
        request = self.read_request(conn.makefile("rb"))
        if request is not None:
            self.requests.append(request[0])
        conn.close()


@pytest.fixture
def closing():
    s = Closing()
    yield s
    s.close()


def test_a_change_dropped_before_any_answer_is_sent_once_more_then_unknown(closing):
    with pytest.raises(ChannelTimeout, match="the retry failed"):
        layer(closing.url).request("POST", "/charges", headers=KEY, body=b"{}")
    assert len(closing.requests) == 2  # the same request (same key) on a second connection


def test_a_change_without_an_idempotency_key_is_not_sent_twice(closing):
    with pytest.raises(ChannelTimeout, match="connection lost after sending"):
        layer(closing.url).request("POST", "/charges", body=b"{}")
    assert len(closing.requests) == 1


def test_a_read_dropped_twice_is_unavailable(closing):
    with pytest.raises(ChannelUnavailable):  # a read charges nothing: failing over is safe
        layer(closing.url).request("GET", "/operations/x")
    assert len(closing.requests) == 2


def test_an_answer_cut_in_the_middle_is_dropped_and_a_read_is_sent_again(scripted):
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort"
    s = scripted([truncated, _ok(b"whole")])
    answer = layer(s.url).request("GET", "/x")
    assert (answer.status, answer.data) == (200, b"whole") and s.connections == 2


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_answer_is_a_refusal(scripted, status):
    s = scripted([b"HTTP/1.1 %d Boom\r\nContent-Length: 2\r\n\r\n{}" % status])
    with pytest.raises(ChannelUnavailable, match=f"HTTP {status}"):
        layer(s.url).request("POST", "/charges", headers=KEY, body=b"{}")


def test_the_adapter_names_the_other_refusals_and_gets_every_other_answer(scripted):
    s = scripted([b"HTTP/1.1 429 Slow\r\nContent-Length: 2\r\n\r\n{}",
                  b"HTTP/1.1 402 No\r\nContent-Length: 2\r\n\r\n{}"])
    http = layer(s.url)
    with pytest.raises(ChannelUnavailable, match="HTTP 429"):
        http.request("POST", "/charges", headers=KEY, body=b"{}", refused={429})
    assert http.request("POST", "/charges", headers=KEY, body=b"{}", refused={429}).status == 402


def test_an_answer_that_is_not_http_is_unknown_for_a_change_and_unavailable_for_a_read(scripted):
    s = scripted([b"SMTP ready\r\n\r\n", b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"])
    with pytest.raises(ChannelTimeout):
        layer(s.url).request("POST", "/charges", headers=KEY, body=b"{}")
    with pytest.raises(ChannelUnavailable):
        layer(s.url).request("GET", "/x")
    with pytest.raises(ChannelUnavailable, match="Content-Length"):
        layer(s.url).request("GET", "/y")


def test_one_kept_alive_connection_reads_every_framing(scripted):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n6;x=1\r\npedia \r\n0\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"after 100")
    s = scripted([_ok(b'{"a":1}'), chunked, interim, b"HTTP/1.1 204 No Content\r\n\r\n",
                  _ok(b"last", b"Connection: close\r\n"), b"HTTP/1.0 200 OK\r\n\r\nto the end"])
    http = layer(s.url + "/base/")

    def get(path, **kw):
        answer = http.request(kw.pop("method", "GET"), path, **kw)
        return answer.status, answer.data

    assert get("/x", method="POST", headers={"A": "b"}, body=b"{}") == (200, b'{"a":1}')
    assert get("/y", params={"q": "1 2"}) == (200, b"Wikipedia ")
    assert get("/z") == (200, b"after 100")
    assert get("/n") == (204, b"")
    assert get("/c") == (200, b"last")
    assert s.connections == 1  # all of that on one kept-alive connection
    assert get("/old") == (200, b"to the end")  # closed: a new one
    assert s.connections == 2
    line, head, body = s.requests[0]
    assert line == "POST /base/x HTTP/1.1" and head["a"] == "b" and head["content-length"] == "2" and body == b"{}"
    assert head["host"] == s.url.removeprefix("http://")
    assert s.requests[1][0] == "GET /base/y?q=1+2 HTTP/1.1"


def test_a_connection_the_channel_closed_while_idle_is_not_reused(scripted):
    s = scripted([_ok(b"one"), _ok(b"two"), _ok(b"three")], idle_close=0.2)
    http = layer(s.url)
    assert http.request("POST", "/x", body=b"{}").data == b"one"
    threading.Event().wait(0.5)  # the server has closed it meanwhile
    assert http.request("POST", "/x", body=b"{}").data == b"two"  # no key: a drop would have been unknown
    assert s.connections == 2
    assert http.request("POST", "/x", body=b"{}").data == b"three"  # kept again
    assert s.connections == 2


def test_bytes_beyond_an_answer_are_never_read_as_the_next_answer(scripted):
    s = scripted([_ok(b"ok") + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale", _ok(b"fresh")])
    http = layer(s.url)
    assert http.request("GET", "/a").data == b"ok"
    assert http.request("GET", "/b").data == b"fresh"


@pytest.mark.parametrize("headers", [
    {"Idempotency-Key": "att_1\r\nX-Injected: 1"},
    {"Idempotency-Key": "att_1\nX-Injected: 1"},
    {"Idempotency-Key": "att_1\rX-Injected: 1"},
    {"Idempotency-Key": "att_1\x00"},
    {"Idempotency-Key": "att_1\r\n X-Folded: 1"},  # what http.client would let through as a folded line
    {"X-Injected: 1\r\nIdempotency-Key": "att_1"},
    {"Bad Name": "1"},
    {"Idempotency-Key": "att_\u2603"},  # not Latin-1: cannot be sent as it is
])
def test_a_header_that_could_add_a_header_is_refused_before_anything_is_sent(scripted, headers):
    s = scripted([_ok(b"fine")])
    http = layer(s.url)
    with pytest.raises(RequestNotSent, match="refused before sending") as refused:  # safe to re-route, not counted
        http.request("POST", "/charges", headers=headers, body=b"{}")
    assert "att_1" not in str(refused.value)  # a header's value (a credential, say) is never echoed
    assert http.request("POST", "/charges", headers=KEY, body=b"{}").data == b"fine"
    assert [line for line, _, _ in s.requests] == ["POST /charges HTTP/1.1"]  # only the good one arrived
    assert s.connections == 1


@pytest.mark.parametrize("method,path", [("GET", "/x HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /y"), ("GET", "/a b"),
                                         ("GET", "/caf\u00e9"), ("GET /x HTTP/1.1\r\n", "/")])
def test_a_request_line_that_could_add_a_header_is_refused_before_anything_is_sent(scripted, method, path):
    s = scripted([])
    with pytest.raises(RequestNotSent, match="request target|method"):
        layer(s.url).request(method, path)
    assert s.connections == 0 and s.requests == []


class Streaming(LoopbackServer):
    """Answers a GET with ``size`` bytes, chunked, then (``stall``) holds the connection unfinished."""

    def __init__(self, size: int, stall: bool = False):
        self.size, self.stall = size, stall
        super().__init__()

    def _serve(self, conn, number):
        self.read_request(conn.makefile("rb"))
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece, sent = b"x" * 65536, 0
        try:
            while sent < self.size:
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            if self.stall:
                threading.Event().wait(3)
            else:
                conn.sendall(b"0\r\n\r\n")
                threading.Event().wait(1)
        except OSError:
            pass
        finally:
            conn.close()


def test_an_answer_of_any_size_streams_and_a_buffered_one_is_capped():
    s = Streaming(MAX_BUFFERED_BODY + 65536)
    try:
        http = layer(s.url)
        with http.stream("GET", "/statements/2026-12-01") as answer:
            total = sum(len(chunk) for chunk in answer.chunks())
        assert answer.status == 200 and total == MAX_BUFFERED_BODY + 65536
        with pytest.raises(ChannelUnavailable, match="too large"):  # a read: nothing charged
            http.request("GET", "/statements/2026-12-01")
    finally:
        s.close()


def test_a_stream_that_stalls_times_out_per_read():
    s = Streaming(4 * 65536, stall=True)
    try:
        received = []
        with pytest.raises(ChannelTimeout, match="no more of the answer within 0.3s"):
            with layer(s.url, 0.3).stream("GET", "/statements/2026-12-01") as answer:
                for chunk in answer.chunks():
                    received.append(len(chunk))
        assert sum(received) == 4 * 65536  # everything sent before the stall was handed over
    finally:
        s.close()


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class TLSServer(ScriptedServer):
    def __init__(self, answers, cert, key):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        super().__init__(answers)
        self.url = self.url.replace("http://127.0.0.1", "https://localhost")

    def _serve(self, conn, number):
        try:
            conn = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return  # the client refused our certificate
        super()._serve(conn, number)


def test_tls_certificates_are_verified_and_a_failed_handshake_is_never_sent(tmp_path):
    cert, key = _self_signed(tmp_path)
    s = TLSServer([_ok(b"secure")], cert, key)
    try:
        with pytest.raises(ChannelUnavailable, match="unreachable"):  # not a CA we trust: nothing sent
            layer(s.url).request("POST", "/charges", headers=KEY, body=b"{}")
        assert s.requests == []
        answer = layer(s.url, ca_certs=cert).request("POST", "/charges", headers=KEY, body=b"{}")
        assert (answer.status, answer.data) == (200, b"secure")
    finally:
        s.close()


def test_time_limits_come_from_the_channel():
    http = for_channel("chan", "http://127.0.0.1:1", 1500)
    assert (http.connect_timeout_s, http.read_timeout_s) == (1.5, 1.5)
    http = for_channel("chan", "http://127.0.0.1:1", 1500, {"connect_timeout_ms": 200})
    assert (http.connect_timeout_s, http.read_timeout_s) == (0.2, 1.5)
