"""The sandbox PSP's serving glue (channels.sandbox.serving: waitress) over real sockets: keep-alive,
framing, bad input, idle and stopped connections."""
from __future__ import annotations

import json
import socket
import time

import pytest

from channels.sandbox.serving import MAX_BODY, Reply, Request, Server


@pytest.fixture
def server():
    seen: list[Request] = []

    def handle(request: Request) -> Reply:
        seen.append(request)
        if request.path == "/boom":
            raise RuntimeError("a bug in a route")
        payload = {"method": request.method, "path": request.path, "query": request.query,
                   "body": request.body.decode(), "id": request.header("X-Request-Id")}
        return Reply(201, json.dumps(payload).encode(), headers={"X-Extra": "1"})

    srv = Server("127.0.0.1", 0, handle, idle_timeout=1).start()
    srv.seen = seen
    yield srv
    srv.stop()
    assert not srv._thread.is_alive()


def connect(srv) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=5)


def read_reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a reply")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        rest += sock.recv(65536)
    return status, headers, rest[:length]


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_serves_several_requests_on_one_connection(server):
    sock = connect(server)
    for i in range(3):
        body = json.dumps({"n": i}).encode()
        sock.sendall(b"POST /v1/x%20y?reference=r" + str(i).encode() + b" HTTP/1.1\r\nHost: h\r\n"
                     b"X-Request-Id: req_1\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        status, headers, payload = read_reply(sock)
        got = json.loads(payload)
        assert status == 201 and headers.get("connection", "keep-alive") != "close" and headers["x-extra"] == "1"
        assert got == {"method": "POST", "path": "/v1/x y", "query": {"reference": f"r{i}"},
                       "body": json.dumps({"n": i}), "id": "req_1"}
    sock.close()


def test_chunked_body_is_read(server):
    sock = connect(server)
    sock.sendall(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\n\r\n")
    status, _, payload = read_reply(sock)
    assert status == 201 and json.loads(payload)["body"] == "abcdefg"
    sock.close()


def test_a_client_waiting_for_100_continue_is_told_to_send_its_body(server):
    sock = connect(server)
    sock.sendall(b"POST /e HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    sock.settimeout(2)
    assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(b"hello")
    status, _, payload = read_reply(sock)
    assert status == 201 and json.loads(payload)["body"] == "hello"
    sock.close()


def test_connection_close_and_http_1_0_end_the_connection(server):
    for request in (b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n", b"GET /a HTTP/1.0\r\n\r\n"):
        sock = connect(server)
        sock.sendall(request)
        status, headers, _ = read_reply(sock)
        assert status == 201 and headers["connection"] == "close"
        assert closed_by_peer(sock)
        sock.close()


@pytest.mark.parametrize("raw, status", [
    (b"NONSENSE\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: " + str(MAX_BODY + 1).encode() + b"\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\nab", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"), 400),
    (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
])
def test_bad_requests_answer_4xx_and_close(server, raw, status):
    sock = connect(server)
    sock.sendall(raw)
    got, headers, _ = read_reply(sock)
    assert got == status and headers["connection"] == "close"
    assert closed_by_peer(sock)
    assert server.seen == []  # nothing reached the handler
    sock.close()


def test_a_failing_handler_answers_500_and_the_connection_goes_on(server):
    sock = connect(server)
    sock.sendall(b"GET /boom HTTP/1.1\r\n\r\n")
    assert read_reply(sock)[0] == 500
    sock.sendall(b"GET /fine HTTP/1.1\r\n\r\n")
    assert read_reply(sock)[0] == 201
    sock.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(server):
    sock = connect(server)
    sock.sendall(b"GET /a HTTP/1.1\r\n\r\n")
    assert read_reply(sock)[0] == 201
    started = time.monotonic()
    assert closed_by_peer(sock)
    assert 0.9 < time.monotonic() - started < 3.5  # checked once a second (waitress's maintenance)
    sock.close()


def test_stop_closes_open_connections(server):
    sock = connect(server)
    sock.sendall(b"GET /a HTTP/1.1\r\n\r\n")
    assert read_reply(sock)[0] == 201
    server.stop()
    assert closed_by_peer(sock)
    with pytest.raises(OSError):
        connect(server)
    sock.close()


def test_bytes_after_a_refused_request_are_never_served(server):
    sock = connect(server)
    sock.sendall(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /smuggled HTTP/1.1\r\n\r\n")
    assert read_reply(sock)[0] == 400
    assert closed_by_peer(sock)
    assert [r.path for r in server.seen] == []
    sock.close()


def test_line_breaks_in_an_echoed_header_value_are_removed():
    srv = Server("127.0.0.1", 0, lambda request: Reply(200, b"{}", headers={"X-Request-Id": "a\rInjected: 1\nB"}))
    srv.start()
    try:
        sock = connect(srv)
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        status, headers, _ = read_reply(sock)
        assert status == 200 and "injected" not in headers and headers["x-request-id"] == "aInjected: 1B"
        sock.close()
    finally:
        srv.stop()


def test_an_answer_of_unknown_length_is_streamed_chunked():
    pieces = (b"x" * 65536 for _ in range(40))  # 2.5 MiB, never held whole
    srv = Server("127.0.0.1", 0, lambda request: Reply(200, pieces, "text/csv"))
    srv.start()
    try:
        from channels.http import ChannelHTTP

        http = ChannelHTTP("sandbox", f"http://127.0.0.1:{srv.port}", connect_timeout_s=2, read_timeout_s=2)
        with http.stream("GET", "/statements/2026-12-01") as answer:
            assert answer.headers["transfer-encoding"] == "chunked"
            assert sum(len(chunk) for chunk in answer.chunks()) == 40 * 65536
    finally:
        srv.stop()
