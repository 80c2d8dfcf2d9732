"""A circuit breaker per channel, shared by every process through Redis.

Outcomes are counted in 10-second buckets over a 60-second window. When at least
MIN_CALLS calls in the window failed at a rate of FAILURE_RATE or more, the circuit
opens for COOL_DOWN seconds; then it is half-open: one probe call at a time is let
through, and a probe that succeeds closes the circuit, one that fails opens it again.
Faults are ChannelUnavailable and ChannelTimeout; a decline is a healthy answer.
If Redis cannot be reached the breaker stays closed (it never blocks payments by itself).
"""
from __future__ import annotations

import logging
import time

import redis

from app.redis_conn import get_redis

BUCKET = 10
WINDOW_BUCKETS = 6
MIN_CALLS = 10
FAILURE_RATE = 0.5
COOL_DOWN = 30
PROBE_LEASE = 10

log = logging.getLogger("payrouter.breaker")


def _keys(channel_id: str) -> tuple[str, str, str]:
    base = f"payrouter:breaker:{channel_id}"
    return f"{base}:open", f"{base}:probe", f"{base}:b"


def record(channel_id: str, ok: bool, now: float | None = None) -> None:
    now = time.time() if now is None else now
    open_key, probe_key, bucket_prefix = _keys(channel_id)
    bucket = f"{bucket_prefix}:{int(now // BUCKET)}"
    try:
        r = get_redis()
        pipe = r.pipeline()
        pipe.hincrby(bucket, "ok" if ok else "err", 1)
        pipe.expire(bucket, BUCKET * (WINDOW_BUCKETS + 1))
        pipe.get(probe_key)
        probing = pipe.execute()[2]
        if probing:
            r.delete(probe_key)
            if ok:
                r.delete(open_key, *[f"{bucket_prefix}:{int(now // BUCKET) - i}" for i in range(WINDOW_BUCKETS)])
                log.info("circuit of %s closed after a good probe", channel_id)
            else:
                r.set(open_key, "1", ex=COOL_DOWN)
            return
        if not ok and _failing(r, bucket_prefix, now):
            if r.set(open_key, "1", ex=COOL_DOWN, nx=True):
                log.warning("circuit of %s opened", channel_id, extra={"channel": channel_id})
    except redis.RedisError:
        log.warning("breaker for %s not updated: Redis unreachable", channel_id)


def _window(pipe, bucket_prefix: str, now: float) -> None:
    current = int(now // BUCKET)
    for i in range(WINDOW_BUCKETS):
        pipe.hmget(f"{bucket_prefix}:{current - i}", "ok", "err")


def _rate_exceeded(buckets) -> bool:
    ok = sum(int(good or 0) for good, _ in buckets)
    err = sum(int(bad or 0) for _, bad in buckets)
    return ok + err >= MIN_CALLS and err / (ok + err) >= FAILURE_RATE


def _failing(r, bucket_prefix: str, now: float) -> bool:
    pipe = r.pipeline()
    _window(pipe, bucket_prefix, now)
    return _rate_exceeded(pipe.execute())


def state(channel_id: str) -> str:
    """closed | open | half_open (without taking the probe); one round trip."""
    open_key, probe_key, _ = _keys(channel_id)
    try:
        is_open, probing = get_redis().pipeline().exists(open_key).exists(probe_key).execute()
    except redis.RedisError:
        return "closed"
    return "open" if is_open else ("half_open" if probing else "closed")


def allow(channel_id: str, now: float | None = None) -> bool:
    """May a call go to this channel now? After the cool-down, only one probe at a time."""
    open_key, probe_key, bucket_prefix = _keys(channel_id)
    now = time.time() if now is None else now
    try:
        r = get_redis()
        pipe = r.pipeline().exists(open_key)
        _window(pipe, bucket_prefix, now)
        is_open, *buckets = pipe.execute()
        if is_open:
            return False
        if not _rate_exceeded(buckets):
            return True
        # Cool-down over but the window still shows failures: half-open, one probe at a time.
        return bool(r.set(probe_key, "1", ex=PROBE_LEASE, nx=True))
    except redis.RedisError:
        return True
