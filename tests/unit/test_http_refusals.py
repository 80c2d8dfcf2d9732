"""Reading a client's X-Request-Id back from a head the server could not parse: whole header lines
only, within the head and its first HEAD_KEPT bytes, and only a value the app itself would take."""
from gunicorn.http import errors as parse_errors

from app.entrypoints import http_refusals
from app.entrypoints.http_refusals import HEAD_KEPT, refusal, request_id_from_head, request_id_from_headers


def test_the_first_whole_x_request_id_line_of_the_head_is_read():
    assert request_id_from_head(b"GET / HTTP/1.x\r\nHost: a\r\nx-request-ID:\t rid-1 \r\nX-Request-Id: rid-2\r\n") \
        == "rid-1"
    assert request_id_from_head(b"GET / HTTP/1.1\nX-Request-Id: bare-lf\n\n") == "bare-lf"


def test_the_request_line_a_cut_line_and_the_body_are_not_read():
    assert request_id_from_head(b"X-Request-Id: in-the-request-line\r\nHost: a\r\n") is None
    assert request_id_from_head(b"GET / HTTP/1.x\r\nX-Request-Id: cut-sho") is None  # more of it may follow
    assert request_id_from_head(b"POST / HTTP/1.x\r\nHost: a\r\n\r\nX-Request-Id: in-the-body\r\n") is None


def test_only_what_the_app_would_take_is_read():
    for value in (b"a\rb", b"a b", b"bell\x07", b"\xc3\xa9", b"r" * 201, b""):
        assert request_id_from_head(b"GET / HTTP/1.x\r\nX-Request-Id: " + value + b"\r\n\r\n") is None, value
    assert request_id_from_headers([("HOST", "a"), ("X-REQUEST-ID", "ok-1")]) == "ok-1"
    assert request_id_from_headers([("X-REQUEST-ID", "no\x01")]) is None


def test_nothing_beyond_the_bound_is_read():
    filler = b"X-Fill: " + b"f" * (HEAD_KEPT - 40) + b"\r\n"
    assert request_id_from_head(b"GET / HTTP/1.x\r\n" + filler + b"X-Request-Id: far-away\r\n\r\n") is None


def test_each_refusal_has_its_status_and_a_well_formed_version_of_another_major_is_505():
    assert refusal(parse_errors.InvalidHTTPVersion("HTTP/1.x")).status == 400
    assert refusal(parse_errors.InvalidHTTPVersion((2, 0))).status == 505
    assert refusal(parse_errors.LimitRequestLine(9000, 8190)).code == "uri_too_long"
    assert refusal(parse_errors.InvalidHeader("CONTENT-LENGTH")).code == "parameter_invalid"
    # A header the app tried to send is the app's fault, though gunicorn derives it from the client's error.
    assert refusal(parse_errors.InvalidResponseHeader("X-A")) is http_refusals.INTERNAL
    assert refusal(ValueError("not a parse error")) is None
