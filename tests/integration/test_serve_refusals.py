"""Every request the production server (gunicorn, `payrouter serve`) cannot read is answered in the
contract's error shape with a fitting status, never gunicorn's HTML page, and carries the client's
X-Request-Id when what the server read holds a valid one (a fresh ``req_…`` otherwise). Raw sockets:
these requests are ones an HTTP client library refuses to send."""
import json
import re
import socket
from urllib.parse import urlsplit

from tests import builders
from tests.live import api_server

RID = "client-rid-7"

# (what is sent, the status, type and code answered)
MALFORMED = {
    "a version that is not HTTP/x.y": (b"GET /healthz HTTP/1.x\r\nX-Request-Id: %s\r\n\r\n",
                                       400, "invalid_request_error", "parameter_invalid"),
    "a major version not served": (b"GET /healthz HTTP/2.0\r\nX-Request-Id: %s\r\n\r\n",
                                   505, "api_error", "http_version_not_supported"),
    "a method that is not a token": (b"GE(T /healthz HTTP/1.1\r\nX-Request-Id: %s\r\n\r\n",
                                     400, "invalid_request_error", "parameter_invalid"),
    "a request line of one word": (b"GET\r\nX-Request-Id: %s\r\n\r\n", 400, "invalid_request_error",
                                   "parameter_invalid"),
    "a target that is not a path": (b"GET healthz HTTP/1.1\r\nX-Request-Id: %s\r\n\r\n", 400,
                                    "invalid_request_error", "parameter_invalid"),
    "a header name with a space": (b"GET /healthz HTTP/1.1\r\nX-Request-Id: %s\r\nBad Name: x\r\n\r\n",
                                   400, "invalid_request_error", "parameter_invalid"),
    "a header line without a colon": (b"GET /healthz HTTP/1.1\r\nX-Request-Id: %s\r\nNoColon\r\n\r\n",
                                      400, "invalid_request_error", "parameter_invalid"),
    "a folded header": (b"GET /healthz HTTP/1.1\r\nX-Request-Id: %s\r\nX-A: a\r\n b\r\n\r\n",
                        400, "invalid_request_error", "parameter_invalid"),
    "Transfer-Encoding and Content-Length both": (
        b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "invalid_request_error", "parameter_invalid"),
    "two Content-Lengths": (b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nContent-Length: 2\r\n"
                            b"Content-Length: 3\r\n\r\n{}", 400, "invalid_request_error", "parameter_invalid"),
    "a Transfer-Encoding not ending in chunked": (
        b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400, "invalid_request_error", "parameter_invalid"),
    "a transfer coding the server does not read": (
        b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nTransfer-Encoding: br\r\n\r\n",
        501, "api_error", "transfer_coding_unsupported"),
    "an expectation other than 100-continue": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nExpect: tea\r\n\r\n",
        417, "invalid_request_error", "expectation_failed"),
    "a request line over 8,190 bytes": (b"GET /healthz?q=" + b"r" * 9000 + b" HTTP/1.1\r\nX-Request-Id: %s\r\n\r\n",
                                        414, "invalid_request_error", "uri_too_long"),
    "a header over 8,190 bytes": (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\nX-Request-Id: %s\r\n\r\n",
                                  431, "invalid_request_error", "request_headers_too_large"),
}


def _exchange(base: str, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection and read until the server closes it."""
    address = urlsplit(base)
    with socket.create_connection((address.hostname, address.port), timeout=20) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _answers(received: bytes) -> list[tuple[int, dict, dict]]:
    """Every response in ``received``: (status, headers with lower-cased names, JSON body)."""
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        headers = {name.lower(): value for name, value in headers.items()}
        length = int(headers["content-length"])
        assert headers["content-type"].startswith("application/json"), head
        answers.append((int(lines[0].split(" ")[1]), headers, json.loads(rest[:length])))
        received = rest[length:]
    return answers


def _the_answer(base: str, raw: bytes) -> tuple[int, dict, dict]:
    received = _exchange(base, raw)
    answers = _answers(received)
    assert len(answers) == 1, received[:2000]
    return answers[0]


def test_every_request_the_server_cannot_read_is_a_contract_error_echoing_the_clients_request_id(clean):
    with api_server(clean, workers=1, threads=2) as base:
        for case, (template, status, kind, code) in MALFORMED.items():
            answered, headers, body = _the_answer(base, template % RID.encode())
            error = body["error"]
            assert (answered, error["type"], error["code"]) == (status, kind, code), (case, answered, body)
            assert error["message"] and "<" not in error["message"], (case, error)
            assert error["request_id"] == headers["x-request-id"] == RID, (case, headers, error)
            assert headers["connection"] == "close", case

            # No X-Request-Id sent: a fresh one, in the header and the body alike.
            plain = re.sub(rb"X-Request-Id: [^\r]*\r\n", b"", template % b"-")
            _, headers, body = _the_answer(base, plain)
            assert re.fullmatch(r"req_[0-9a-f]{24}", headers["x-request-id"]), (case, headers)
            assert body["error"]["request_id"] == headers["x-request-id"], case
        assert _the_answer(base, b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 200  # the worker serves on


def test_a_request_id_the_app_would_not_take_is_replaced_by_a_fresh_one(clean):
    refused = [
        b"abc\rSet-Cookie: stolen=1",  # a bare CR inside the value: never reaches the answer's head
        b"has space",
        b"bell\x07",
        b"\xc3\xa9t\xc3\xa9",  # not ASCII
        b"r" * 201,  # longer than the app takes
        b"",
    ]
    with api_server(clean, workers=1, threads=2) as base:
        for sent in refused:
            received = _exchange(base, b"GET /healthz HTTP/1.x\r\nX-Request-Id: " + sent + b"\r\n\r\n")
            assert b"Set-Cookie" not in received and b"stolen" not in received, received
            (status, headers, body), = _answers(received)
            assert status == 400 and re.fullmatch(r"req_[0-9a-f]{24}", headers["x-request-id"]), (sent, received)
            assert body["error"]["request_id"] == headers["x-request-id"], sent


def test_a_malformed_chunked_body_is_a_400_whether_the_app_reads_it_or_not(clean):
    _, secret = builders.merchant()
    with api_server(clean, workers=1, threads=2) as base:
        head = (b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nIdempotency-Key: k-%s\r\n"
                b"Content-Type: application/json\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n")
        for case, body in {"a chunk size that is not hexadecimal": b"zz\r\n{}\r\n0\r\n\r\n",
                           "a chunk not ended by CRLF": b"2\r\n{}XX0\r\n\r\n"}.items():
            # The route reads the body: the contract's 400, with the request's id (the app's own answer).
            status, headers, answer = _the_answer(base, head % (RID.encode(), RID.encode(), secret.encode()) + body)
            error = answer["error"]
            assert (status, error["type"], error["code"]) == (400, "invalid_request_error", "parameter_invalid"), \
                (case, answer)
            assert error["request_id"] == headers["x-request-id"] == RID, case

            # Refused before the body is read (no valid key: 401): that one answer, and no second one for
            # the same request once the server finds the body it drains malformed.
            status, _, answer = _the_answer(base, head % (RID.encode(), b"2", b"sk_test_unknown") + body)
            assert (status, answer["error"]["code"]) == (401, "invalid_api_key"), (case, answer)
