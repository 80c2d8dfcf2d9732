"""Facts: the typed, flattened view of a request that both evaluators read.

Every fact path has one type, fixed here, so the engine never compares a string with a
number (``"9" > 10`` is true inside durable-rules):

* ``amount`` and ``hour`` are integers; any other value (bool, float, str) counts as missing.
* every other path is a string; an ``int`` is turned into its decimal text, a ``bool`` into
  ``"true"``/``"false"``; ``None``, floats, lists and objects count as missing.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

NUMERIC_FACTS = frozenset({"amount", "hour"})
PLAIN_FACTS = frozenset({"type", "amount", "currency", "merchant.id", "merchant.category", "hour", "weekday"})
OPEN_PREFIXES = ("payment_method.", "customer.", "metadata.")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SUFFIX = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def is_known_fact(path: object) -> bool:
    """True for a fact path the rules may name (contract §3)."""
    if not isinstance(path, str):
        return False
    if path in PLAIN_FACTS:
        return True
    for prefix in OPEN_PREFIXES:
        if path.startswith(prefix):
            return bool(_SUFFIX.match(path[len(prefix):]))
    return False


def is_numeric(path: str) -> bool:
    return path in NUMERIC_FACTS


def _typed(path: str, value: Any) -> Any:
    if path in NUMERIC_FACTS:
        return value if type(value) is int else None
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    return None


def _walk(flat: dict[str, Any], prefix: str, obj: Mapping[str, Any]) -> None:
    numeric = NUMERIC_FACTS
    for key, value in obj.items():
        path = prefix + key if type(key) is str else f"{prefix}{key}"
        kind = type(value)
        if kind is str:
            if path not in numeric:
                flat[path] = value
        elif kind is int:
            flat[path] = value if path in numeric else str(value)
        elif kind is dict or isinstance(value, Mapping):
            _walk(flat, path + ".", value)
        else:
            typed = _typed(path, value)
            if typed is not None:
                flat[path] = typed


def flatten(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Nested or dotted facts → ``{path: int | str}``; wrongly typed values are dropped (missing).
    (A module-level walk: a nested recursive closure is a reference cycle, garbage for the GC to find
    on every decision.)"""
    flat: dict[str, Any] = {}
    _walk(flat, "", facts)
    return flat


def facts_for(operation_type: str, amount: int, currency: str, payment_method: Mapping[str, Any] | None = None,
              customer: Mapping[str, Any] | None = None, merchant_id: str | None = None,
              merchant_category: str | None = None, metadata: Mapping[str, Any] | None = None,
              now: datetime | None = None) -> dict[str, Any]:
    """The facts dict of one operation, with ``hour`` (0–23) and ``weekday`` (mon…sun) in UTC."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    now = now.astimezone(timezone.utc)
    facts: dict[str, Any] = {
        "type": operation_type, "amount": amount, "currency": currency,
        "hour": now.hour, "weekday": WEEKDAYS[now.weekday()],
        "payment_method": dict(payment_method or {}), "customer": dict(customer or {}),
        "merchant": {k: v for k, v in (("id", merchant_id), ("category", merchant_category)) if v is not None},
        "metadata": dict(metadata or {}),
    }
    return facts
