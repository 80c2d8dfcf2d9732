"""Callback signatures of the sandbox PSP.

``X-Sandbox-Timestamp: <unix seconds>`` and
``X-Sandbox-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}." + body)>``.
Several space-separated ``v1=`` values may be sent (secret rotation); one match suffices.
Timestamps more than five minutes away from now are refused (replay protection).
"""
from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Mapping

from channels.base import InvalidCallback

SIGNATURE_HEADER = "X-Sandbox-Signature"
TIMESTAMP_HEADER = "X-Sandbox-Timestamp"
TOLERANCE_S = 300
_TIMESTAMP = re.compile(r"[0-9]{1,15}")  # ASCII digits only: a longer one is no time and no float holds it


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The signature headers for a callback body, signed at ``now``."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None,
           tolerance: int = TOLERANCE_S) -> int:
    """Check a callback's signature; return its timestamp or raise InvalidCallback."""
    lowered = {str(k).lower(): str(v) for k, v in dict(headers).items()}
    raw_ts = lowered.get(TIMESTAMP_HEADER.lower())
    raw_sig = lowered.get(SIGNATURE_HEADER.lower())
    if not raw_ts or not raw_sig:
        raise InvalidCallback("callback is not signed")
    if not _TIMESTAMP.fullmatch(raw_ts.strip()):
        raise InvalidCallback("callback timestamp is malformed")
    timestamp = int(raw_ts)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidCallback("callback timestamp is outside the tolerance (stale or replayed)")
    expected = sign(secret, timestamp, body)
    # compare_digest refuses str that is not ASCII (a header byte above 0x7F): such a value matches nothing
    if not any(candidate.isascii() and hmac.compare_digest(expected, candidate) for candidate in raw_sig.split()):
        raise InvalidCallback("callback signature does not match")
    return timestamp
