"""Daily limits (``daily_amount`` / ``daily_count`` per customer or merchant) in Redis.

``reserve`` checks and increments every applicable counter in one Lua script (atomic, so
concurrent requests never over-reserve; run again for the same reservation, it counts nothing);
``release`` gives a reservation back exactly once.
``prepare`` → ``send`` → ``settle`` are its steps, for a caller that sends the script in a pipeline
with other commands (the success-rate read of the same decision: one round trip).
Keys are bucketed per UTC day and expire after two days:
``payrouter:limit:<YYYYMMDD>:<amount|count>:<customer|merchant>:<id>[:<currency>]``
(amounts are counted per currency; counts across currencies). A per-customer limit on a
request without ``customer.id`` cannot be attributed and is not applied.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from app.domain.errors import LimitExceeded
from rules.facts import flatten

TTL_SECONDS = 2 * 86_400
PREFIX = "payrouter:limit"

# Idempotent per reservation: a script sent again with the same marker (the client's retry after a reply
# lost to a dropped connection re-sends it, pipeline and all) counts nothing again and answers 0, as the
# first run did (a refusal sets no marker, so a re-sent refusal is decided again: still nothing counted).
_RESERVE = """
local n = #KEYS - 1
if redis.call('EXISTS', KEYS[n + 1]) == 1 then return 0 end
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current + tonumber(ARGV[i]) > tonumber(ARGV[n + i]) then return i end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[i])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * n + 1])
end
redis.call('SET', KEYS[n + 1], '1', 'EX', ARGV[2 * n + 1])
return 0
"""

_RELEASE = """
local n = #KEYS - 1
if redis.call('DEL', KEYS[n + 1]) == 0 then return 0 end
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECRBY', KEYS[i], ARGV[i]) end
end
return 1
"""


@dataclass(frozen=True)
class Reservation:
    """What ``reserve`` took: give it back with ``release`` (idempotent)."""

    id: str
    keys: tuple[str, ...]
    increments: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"id": self.id, "keys": list(self.keys), "increments": list(self.increments)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Reservation":
        return cls(data["id"], tuple(data["keys"]), tuple(data["increments"]))


def _scope_id(flat: Mapping[str, Any], per: str) -> str | None:
    value = flat.get("customer.id" if per == "customer" else "merchant.id")
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Pending:
    """A reservation prepared by ``prepare``: the counters it would take, not yet sent."""

    id: str
    keys: tuple[str, ...]
    increments: tuple[int, ...]
    maxima: tuple[int, ...]
    rules: tuple[tuple, ...]  # (rule, kind, per, max) of each key, for the refusal's message


def prepare(decision_limits: Mapping[str, Any], facts: Mapping[str, Any], amount: int, currency: str,
            *, now: datetime | None = None) -> Pending:
    """The daily-limit counters this operation counts against (none: nothing to send)."""
    if type(amount) is not int or amount < 0:
        raise TypeError("amount must be a non-negative int of minor units")
    flat = flatten(facts)
    day = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%d")
    keys, increments, maxima, rules = [], [], [], []
    for kind, metric in (("daily_amount", "amount"), ("daily_count", "count")):
        for limit in decision_limits.get(kind) or ():
            scope = _scope_id(flat, limit["per"])
            if scope is None:
                continue
            key = f"{PREFIX}:{day}:{metric}:{limit['per']}:{scope}"
            keys.append(f"{key}:{currency}" if metric == "amount" else key)
            increments.append(amount if metric == "amount" else 1)
            maxima.append(int(limit["max"]))
            rules.append((limit.get("rule"), kind, limit["per"], limit["max"]))
    return Pending(uuid.uuid4().hex, tuple(keys), tuple(increments), tuple(maxima), tuple(rules))


def send(redis, pending: Pending) -> Any:
    """Run the reservation script on ``redis``, or queue it when ``redis`` is a pipeline (so it shares a
    round trip with other commands); ``settle`` reads its answer. ``pending`` must have keys."""
    marker = f"{PREFIX}:reservation:{pending.id}"
    return redis.eval(_RESERVE, len(pending.keys) + 1, *pending.keys, marker, *pending.increments, *pending.maxima,
                      TTL_SECONDS)


def settle(pending: Pending, answer: Any) -> Reservation:
    """The reservation from the script's answer; ``LimitExceeded`` if a limit would be exceeded (nothing
    was taken then). An exception as the answer (a pipeline's) is raised."""
    if isinstance(answer, BaseException):
        raise answer
    failed = int(answer) if pending.keys else 0
    if failed:
        rule, kind, per, maximum = pending.rules[failed - 1]
        raise LimitExceeded(f"{kind} limit of {maximum} per {per} set by rule {rule!r} would be exceeded",
                            rule=rule, limit=kind)
    return Reservation(pending.id, pending.keys, pending.increments)


def reserve(redis, decision_limits: Mapping[str, Any], facts: Mapping[str, Any], amount: int, currency: str,
            *, now: datetime | None = None) -> Reservation:
    """Count this operation against every daily limit of the decision; ``LimitExceeded`` if any is over."""
    pending = prepare(decision_limits, facts, amount, currency, now=now)
    return settle(pending, send(redis, pending) if pending.keys else None)


def release(redis, reservation: Reservation) -> bool:
    """Give a reservation back; True the first time, False on any repeat (idempotent)."""
    if not reservation.keys:
        return False
    marker = f"{PREFIX}:reservation:{reservation.id}"
    return bool(redis.eval(_RELEASE, len(reservation.keys) + 1, *reservation.keys, marker, *reservation.increments))
