"""Live success rates for ``strategy: success_rate`` (contract §3): per channel × kind × method ×
currency, how many final outcomes and how many of them succeeded, over a sliding window.

Kept in Redis as per-minute bucket counters, so both sides cost the same whatever the traffic: an
outcome is one pipeline of INCR + EXPIRE on its minute's bucket (two counters: all outcomes and
succeeded ones), and a decision reads its candidates' buckets of the window with one MGET
(2 × window_minutes × channels keys, bounded by the rule file, never a scan of history); an
operation with daily limits sends that MGET in one pipeline with its limit reservation
(``app.services.routing.complete``), so its scores cost no round trip of their own. A bucket expires
once no window can reach it. Declines and channel faults count as failures: for routing, a channel
that answers but does not get the money is as bad as one that does not answer. A failure that says
nothing of the channel (app.domain.channel_outcomes: nothing sent, one merchant's key refused) is not
counted (app.services.operations decides, with the same list the circuit breaker obeys).

An outcome counts when the transaction that recorded it commits (a settlement rolled back counts
nothing). Without Redis (stopped, or marked down by app.adapters.redis_conn) an outcome is not
counted and a decision gets None: the strategy then keeps the listed order and says so.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis
from sqlalchemy.orm import Session

from app.adapters import db
from app.adapters.redis_conn import get_redis

log = logging.getLogger("payrouter.success_rates")

MAX_WINDOW_MINUTES = 240  # schemas/rules.schema.json: window_minutes maximum
RETAIN_SECONDS = (MAX_WINDOW_MINUTES + 1) * 60  # a bucket outlives every window that can read it
NO_METHOD = "-"


def _minute(now: float | None) -> int:
    return int((time.time() if now is None else now) // 60)


def _key(counter: str, channel: str, kind: str, method: str | None, currency: str, minute: int) -> str:
    return f"sr:{counter}:{channel}:{kind}:{method or NO_METHOD}:{currency}:{minute}"


def method_of(kind: str, instrument: dict | None) -> str | None:
    """The method an outcome is counted under, as routing reads it: a payout's is none."""
    if kind == "withdrawal" or not instrument:
        return None
    return instrument.get("type")


def record(outcomes: Iterable[tuple[str, str, str | None, str, bool]], *, now: float | None = None) -> None:
    """Count ``(channel, kind, method, currency, succeeded)`` outcomes now: one round trip for all."""
    outcomes = list(outcomes)
    if not outcomes:
        return
    minute = _minute(now)
    try:
        pipe = get_redis().pipeline(transaction=False)
        for channel, kind, method, currency, succeeded in outcomes:
            for counter in ("n", "ok") if succeeded else ("n",):
                key = _key(counter, channel, kind, method, currency, minute)
                pipe.incr(key)
                pipe.expire(key, RETAIN_SECONDS)
        pipe.execute()
    except redis.RedisError as exc:
        log.debug("success rates not counted (Redis unavailable): %s", exc)


def window_keys(channels: tuple[str, ...], *, window_minutes: int, kind: str, method: str | None, currency: str,
                now: float | None = None) -> list[str]:
    """The bucket keys ``counts`` reads (for a caller that sends the MGET in a pipeline of its own)."""
    last = _minute(now)
    minutes = range(last - window_minutes + 1, last + 1)
    return [_key(counter, ch, kind, method, currency, m) for ch in channels for counter in ("ok", "n")
            for m in minutes]


def tally(channels: tuple[str, ...], window_minutes: int, values: list) -> dict[str, tuple[int, int]]:
    """``{channel: (succeeded, outcomes)}`` from the MGET of ``window_keys``."""
    out, width = {}, window_minutes
    for i, ch in enumerate(channels):
        ok = sum(int(v) for v in values[2 * i * width:(2 * i + 1) * width] if v is not None)
        n = sum(int(v) for v in values[(2 * i + 1) * width:(2 * i + 2) * width] if v is not None)
        out[ch] = (ok, n)
    return out


def counts(channels: tuple[str, ...], *, window_minutes: int, kind: str, method: str | None, currency: str,
           now: float | None = None) -> dict[str, tuple[int, int]] | None:
    """``{channel: (succeeded, outcomes)}`` over the last ``window_minutes`` minutes (this one
    included), with one MGET; None when Redis cannot answer."""
    keys = window_keys(channels, window_minutes=window_minutes, kind=kind, method=method, currency=currency, now=now)
    try:
        values = get_redis().mget(keys)
    except redis.RedisError:
        return None
    return tally(channels, window_minutes, values)


def record_on_commit(session: Session, channel: str, kind: str, method: str | None, currency: str,
                     succeeded: bool) -> None:
    """Count an attempt's final outcome when (and only if) the transaction that closed it commits:
    all of a transaction's outcomes in one round trip."""
    db.after_commit(session, record, (channel, kind, method, currency, succeeded))
