"""Per-API-key rate limits (CONTRACT §1): PAYROUTER_RATE_LIMIT requests per second, burst 2×.

The ``limits`` package's sliding-window counter over a window of two seconds admitting twice
the rate: on average the rate, and up to twice it at once. The counters live in Redis (the
request path's client, app.adapters.redis_conn: one round trip per request, one Lua script, at most
REQUEST_TIMEOUT), keyed by the API key's id, never its secret. Without Redis (down, hung, or
marked down in this process) each process applies the same limit in its own memory
(``MemoryStorage``): a client may then get the limit once per process, never unlimited.
Only /v1 requests are limited: /healthz, /readyz, /metrics, /callbacks, /ops and /admin are not.
"""
from __future__ import annotations

import logging
import math
import threading

import redis
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from app.adapters import redis_conn
from app.config import get_config
from app.domain.errors import RateLimited

log = logging.getLogger("payrouter.ratelimit")

BURST = 2  # the window, in seconds, and how many times the rate may come at once
PREFIX = "payrouter:ratelimit"

_lock = threading.Lock()
_on_redis: tuple[redis.Redis, SlidingWindowCounterRateLimiter] | None = None
_in_memory: SlidingWindowCounterRateLimiter | None = None
_items: dict[int, RateLimitItemPerSecond] = {}


def _item(rate: int) -> RateLimitItemPerSecond:
    item = _items.get(rate)
    if item is None:
        item = _items[rate] = RateLimitItemPerSecond(rate * BURST, BURST, namespace="api_key")
    return item


def _redis_limiter() -> SlidingWindowCounterRateLimiter:
    """The limiter on this process's request-path Redis client (rebuilt after a fork, when
    app.adapters.redis_conn hands out a new client)."""
    global _on_redis
    client = redis_conn.get_redis()
    held = _on_redis
    if held is None or held[0] is not client:
        storage = RedisStorage("redis://", connection_pool=client.connection_pool, key_prefix=PREFIX)
        held = _on_redis = (client, SlidingWindowCounterRateLimiter(storage))
    return held[1]


def _memory_limiter() -> SlidingWindowCounterRateLimiter:
    global _in_memory
    if _in_memory is None:
        with _lock:
            if _in_memory is None:
                _in_memory = SlidingWindowCounterRateLimiter(MemoryStorage())
    return _in_memory


def check(key_id: str) -> None:
    """Count one request of API key ``key_id``; raise RateLimited (429, Retry-After) past the limit."""
    rate = get_config().rate_limit
    if rate <= 0:
        return
    item = _item(rate)
    try:
        if redis_conn.is_down():
            raise redis.ConnectionError("marked down")
        allowed = _redis_limiter().hit(item, key_id)
    except redis.RedisError:
        allowed = _memory_limiter().hit(item, key_id)
    if not allowed:
        # No second round trip for the exact reset: within one window a request is admitted again.
        raise RateLimited(f"Too many requests for this API key: the limit is {rate} per second "
                          f"(bursts up to {rate * BURST}); retry later.", code="rate_limited",
                          retry_after=math.ceil(item.get_expiry()))


def reset() -> None:
    """Forget this process's limiters (tests; after fork)."""
    global _on_redis, _in_memory
    with _lock:
        _on_redis = _in_memory = None
