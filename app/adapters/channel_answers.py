"""What a channel adapter answers, made fit to record before the router records any of it.

An adapter (a third-party plugin among them) may answer a charge the PSP took with a result the
database cannot hold: text longer than its column, a ``raw`` JSON cannot encode. Failing then would
lose the record of money that moved, so the answer is made fit instead: text is cut to its column
with ``MARK`` at the end, ``raw`` becomes JSON (what JSON cannot hold as its string, a cycle or a
nesting too deep marked, at most ``RAW_LIMIT`` characters kept). An answer that says nothing the
router can act on (not a ``ChannelResult``, a status outside ``channels.base.STATUSES``, a field of
the wrong type) is an ``AdapterFault``: an unknown outcome, as a timeout is (never a failure, which
could be re-routed and charged twice); the operation stays processing and a status query settles it.
Either way the channel is named in the log.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
from dataclasses import replace
from typing import Any, Mapping

from app.adapters.models import Attempt
from channels.base import STATUSES, Channel, ChannelError, ChannelResult

log = logging.getLogger("payrouter.channels")
# The columns a result's text is recorded in: the attempt's (the operation's channel_reference,
# failure_code and failure_message are as wide; tests/unit/test_channel_answers.py checks it).
TEXT_LIMITS = {name: Attempt.__table__.c[name].type.length
               for name in ("channel_reference", "error_code", "error_message")}
RAW_LIMIT = 32_768  # characters of a result's raw answer kept, as JSON
RAW_DEPTH = 32  # levels of nesting kept in raw
MARK = "…"  # ends a text that was cut
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")  # NUL (no text column takes it) and unpaired surrogates


class AdapterFault(ChannelError):
    """A channel adapter answered something that is not a result the router can act on: the
    outcome is unknown (left processing for status queries, never failed nor re-routed)."""

    code = "adapter_fault"
    channel_reference: str | None = None  # the answer's, if it had one: recorded, the status queries use it


def ask(adapter: Channel, verb: str, *args) -> ChannelResult:
    """``adapter.<verb>(*args)`` (charge, refund, payout, capture, void, query): its answer made fit
    to record (``fit``). A ChannelError the adapter raises is raised as it is; anything else it
    raises (a bug in a plugin, perhaps after the PSP charged) is an AdapterFault, logged with its
    traceback: an unknown outcome that status queries settle, never a 500 nor a failover."""
    try:
        answer = getattr(adapter, verb)(*args)
    except ChannelError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a plugin raises, the outcome is unknown
        log.exception("adapter fault: channel %s raised %s in %s; outcome unknown", adapter.id,
                      type(exc).__name__, verb, extra={"channel": adapter.id})
        raise AdapterFault(f"channel {adapter.id}: the adapter raised {type(exc).__name__} in {verb}") from exc
    return fit(adapter.id, answer)


def fit(channel_id: str, result: Any) -> ChannelResult:
    """``result`` as the router can record it, or AdapterFault (logged with the channel) if it says
    nothing the router can act on."""
    if (why := _malformed(result)) is not None:
        log.error("adapter fault: channel %s answered %s; outcome unknown", channel_id, why,
                  extra={"channel": channel_id})
        fault = AdapterFault(f"channel {channel_id}: the adapter answered {why}")
        if isinstance(result, ChannelResult) and result.channel_reference is not None:
            fault.channel_reference = text_fit(result.channel_reference, TEXT_LIMITS["channel_reference"])
        raise fault
    changes: dict[str, Any] = {name: text_fit(getattr(result, name), limit) for name, limit in TEXT_LIMITS.items()
                               if getattr(result, name) is not None}
    changes["raw"] = raw_fit(result.raw)
    if result.next_action is not None:
        changes["next_action"] = raw_fit(result.next_action)
    altered = sorted(name for name, value in changes.items() if _differs(value, getattr(result, name)))
    if altered:
        log.warning("adapter fault: channel %s answered %s that could not be recorded as it was (%s): recorded "
                    "cut or converted", channel_id, result.status, ", ".join(altered), extra={"channel": channel_id})
    return replace(result, **changes)


def _malformed(result: Any) -> str | None:
    """What makes an answer unusable, or None."""
    if not isinstance(result, ChannelResult):
        return f"a {type(result).__name__}, not a ChannelResult"
    if not isinstance(result.status, str) or result.status not in STATUSES:
        return f"the status {_shown(result.status)}, not one of {', '.join(STATUSES)}"
    captured = result.amount_captured
    if captured is not None and (not isinstance(captured, int) or isinstance(captured, bool) or captured < 0):
        return f"the amount_captured {_shown(captured)}, not a whole number of minor units"
    if result.capture_before is not None and not isinstance(result.capture_before, dt.datetime):
        return f"the capture_before {_shown(result.capture_before)}, not a datetime"
    if result.next_action is not None and not isinstance(result.next_action, Mapping):
        return f"the next_action {_shown(result.next_action)}, not a mapping"
    return None


def _differs(fitted: Any, given: Any) -> bool:
    try:
        return bool(fitted != given)
    except Exception:  # noqa: BLE001 - a value whose comparison fails was converted
        return True


def _shown(value: Any) -> str:
    try:
        return text_fit(repr(value), 80)
    except Exception:  # noqa: BLE001 - an object that cannot say what it is
        return f"<{type(value).__name__}>"


def fault_text(exc: BaseException) -> str:
    """A fault an adapter raised, as an attempt's error_message records it."""
    return text_fit(exc, TEXT_LIMITS["error_message"])


def text_fit(value: Any, limit: int) -> str:
    """``value`` as text a column of ``limit`` characters takes: a string (what is not one, as its
    ``str``), NUL and unpaired surrogates replaced, cut to ``limit`` with ``MARK`` at the end."""
    text = _BAD_TEXT.sub("\ufffd", value if isinstance(value, str) else _str(value))
    return text if len(text) <= limit else text[:limit - len(MARK)] + MARK


def raw_fit(raw: Any) -> dict:
    """A raw answer as a JSON object: what JSON cannot hold as text (bytes decoded, dates in ISO
    8601, Decimal, NaN and other objects as their ``str``), a cycle or a nesting deeper than
    ``RAW_DEPTH`` marked; over ``RAW_LIMIT`` characters of JSON, its beginning as text, marked."""
    try:
        plain = _plain(raw if isinstance(raw, Mapping) else {"raw": raw}, 0, set())
        encoded = json.dumps(plain, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except Exception as exc:  # noqa: BLE001 - an object whose own methods fail: the outcome still stands
        return {"unrecordable": text_fit(f"{type(raw).__name__}: {exc!r}", 500)}
    if len(encoded) <= RAW_LIMIT:
        return plain
    return {"truncated": True, "chars": len(encoded), "head": encoded[:RAW_LIMIT]}


def _plain(value: Any, depth: int, within: set[int]) -> Any:
    """``value`` made of JSON's types only (``within``: the containers being walked, to see a cycle)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _BAD_TEXT.sub("\ufffd", value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _BAD_TEXT.sub("\ufffd", bytes(value).decode("utf-8", "replace"))
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if not isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return _BAD_TEXT.sub("\ufffd", _str(value))
    if id(value) in within:
        return "<cycle>"
    if depth >= RAW_DEPTH:
        return "<nested too deep>"
    within.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {_BAD_TEXT.sub("\ufffd", k if isinstance(k, str) else _str(k)): _plain(v, depth + 1, within)
                    for k, v in value.items()}
        return [_plain(item, depth + 1, within) for item in value]
    finally:
        within.discard(id(value))


def _str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - an object that cannot say what it is
        return f"<{type(value).__name__}>"
