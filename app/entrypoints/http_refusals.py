"""What the HTTP server cannot read, as the contract's errors.

gunicorn's HTTP/1.1 parser refuses a request it cannot read (a request line, a header, a framing it
will not guess at, a chunked body) and answers it with an HTML page of its own. One table here decides
the contract's answer instead (status, type, code, message), for the server, which refuses a head
before the app sees the request (app/entrypoints/server.py), and for the app, which finds a chunked
body malformed as a route reads it (app/entrypoints/api/errors.py).

A refusal echoes the client's ``X-Request-Id`` like every answer does, taken from what the server read
of the head (at most ``HEAD_KEPT`` bytes, that header's first line only, and only a value the app
itself would take: ``context.valid_request_id``); otherwise a fresh one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from gunicorn.http import errors as parse_errors

from app import context

# The longest request line (method, URL, version) gunicorn reads: its maximum (it refuses more).
MAX_REQUEST_LINE = 8190
# The most of a request's head read back for its X-Request-Id: twice the longest request line gunicorn
# reads, so a header after a request line refused as too long can still be found.
HEAD_KEPT = 16 * 1024

ParseError = parse_errors.ParseException


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    kind: str
    code: str
    message: str


def _malformed(message: str) -> Refusal:
    return Refusal(400, "Bad Request", "invalid_request_error", code="parameter_invalid", message=message)


INTERNAL = Refusal(500, "Internal Server Error", "api_error", code="internal_error",
                   message="An internal error occurred.")
VERSION_NOT_SUPPORTED = Refusal(505, "HTTP Version Not Supported", "api_error", code="http_version_not_supported",
                                message="only HTTP/1.0 and HTTP/1.1 are served")

# Most specific first: the first class a refusal is an instance of decides.
REFUSALS: list[tuple[type[Exception], Refusal]] = [
    # A header the app tried to send (gunicorn raises these as subclasses of the client's header errors).
    (parse_errors.InvalidResponseHeader, INTERNAL),
    (parse_errors.InvalidResponseHeaderName, INTERNAL),
    (parse_errors.ConfigurationProblem, INTERNAL),
    (parse_errors.LimitRequestLine, Refusal(
        414, "URI Too Long", "invalid_request_error", code="uri_too_long",
        message=f"the request line (method, URL, version) is longer than {MAX_REQUEST_LINE} bytes")),
    (parse_errors.LimitRequestHeaders, Refusal(
        431, "Request Header Fields Too Large", "invalid_request_error", code="request_headers_too_large",
        message="the request's headers are too many or too large")),
    (parse_errors.UnsupportedTransferCoding, Refusal(
        501, "Not Implemented", "api_error", code="transfer_coding_unsupported",
        message="the request's Transfer-Encoding is not one the server reads (chunked is)")),
    (parse_errors.ExpectationFailed, Refusal(
        417, "Expectation Failed", "invalid_request_error", code="expectation_failed",
        message="the request's Expect header asks for something other than 100-continue")),
    (parse_errors.InvalidRequestMethod, _malformed("the request's method is not a valid HTTP method")),
    (parse_errors.InvalidHTTPVersion, _malformed("the request line's HTTP version is not valid")),
    (parse_errors.InvalidRequestLine, _malformed(
        "the request line is not valid HTTP/1.1 (method, target, version, separated by single spaces, "
        "ended by CRLF)")),
    (parse_errors.InvalidHeaderName, _malformed("a header's name is not valid (a token, no underscore)")),
    (parse_errors.ObsoleteFolding, _malformed("a header is folded over several lines")),
    (parse_errors.InvalidHeader, _malformed(
        "a header is not valid: a control character or no colon, a line ended by a bare LF, a repeated "
        "Host or Content-Length, Content-Length beside Transfer-Encoding, or a Transfer-Encoding not ending "
        "in chunked")),
    (parse_errors.InvalidSchemeHeaders, _malformed("the request's scheme headers contradict each other")),
    (parse_errors.InvalidChunkSize, _malformed("the chunked body has a chunk size that is not hexadecimal")),
    (parse_errors.ChunkMissingTerminator, _malformed("a chunk of the chunked body is not ended by CRLF")),
    (parse_errors.InvalidChunkExtension, _malformed("a chunk extension of the chunked body is not valid")),
    (parse_errors.ParseException, _malformed("the request is not valid HTTP/1.1")),
]


def refusal(error: BaseException) -> Refusal | None:
    """The contract's answer to what the server could not read, or None for any other error."""
    if isinstance(error, parse_errors.InvalidHTTPVersion) and isinstance(error.version, tuple):
        return VERSION_NOT_SUPPORTED  # well formed (HTTP/2.0, HTTP/0.9), of a major version not served
    return next((answer for cls, answer in REFUSALS if isinstance(error, cls)), None)


_REQUEST_ID_LINE = re.compile(rb"x-request-id:[ \t]*(.*?)[ \t]*\r?", re.IGNORECASE | re.DOTALL)


def request_id_from_head(head: bytes) -> str | None:
    """The client's X-Request-Id in the first ``HEAD_KEPT`` bytes of a request's head as it arrived
    (which may be malformed, or cut short), or None. Only whole header lines after the request line are
    read, up to the end of the head; the first X-Request-Id line decides, and its value is kept only if
    the app would keep it (printable ASCII, no space, at most 200 characters): never CR, LF or a control."""
    lines = head[:HEAD_KEPT].split(b"\n")[1:-1]  # not the request line; not a last line cut short
    for line in lines:
        if line in (b"", b"\r"):
            return None  # the end of the head
        found = _REQUEST_ID_LINE.fullmatch(line)
        if found:
            return _acceptable(found.group(1).decode("latin-1"))
    return None


def request_id_from_headers(headers: list[tuple[str, str]]) -> str | None:
    """The client's X-Request-Id among headers gunicorn parsed (upper-cased names), or None."""
    wanted = context.REQUEST_ID_HEADER.upper()
    return next((_acceptable(value) for name, value in headers if name == wanted), None)


def _acceptable(value: str) -> str | None:
    return value if context.valid_request_id(value) else None
