"""Per-key rate limits (CONTRACT §1): 429 rate_limit_error with Retry-After past
PAYROUTER_RATE_LIMIT per second (burst 2×), each key on its own, health and metrics exempt;
counted in Redis by the key's id, and per process in memory when Redis is down or hung."""
from __future__ import annotations

import time

import pytest
import redis

from app.adapters import ratelimit, redis_conn
from tests import builders
from tests.outage_support import PrivateRedis

RATE = 5  # a window of 2 s admits 10


@pytest.fixture
def limited(clean, configured):
    ratelimit.reset()
    yield configured(clean.with_(rate_limit=RATE)).test_client()
    ratelimit.reset()


def until_refused(api, most: int = 40):
    """Requests of one key until the first 429: (how many were admitted, the 429)."""
    for admitted in range(most):
        response = api.get("/v1/events?limit=1")
        if response.status_code == 429:
            return admitted, response
        assert response.status_code == 200, response.get_json()
    raise AssertionError(f"no 429 after {most} requests")


def evalsha_calls(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    finally:
        client.close()


def assert_refusal(response) -> None:
    error = response.get_json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= ratelimit.BURST


def test_each_key_gets_its_own_limit_with_retry_after(limited):
    first, second = builders.api(limited, "A"), builders.api(limited, "B")
    admitted, refused = until_refused(first)
    assert RATE * ratelimit.BURST <= admitted <= RATE * ratelimit.BURST + 2  # +2: a window may turn meanwhile
    assert_refusal(refused)
    assert second.get("/v1/events?limit=1").status_code == 200  # the other key is not touched
    for path in ("/healthz", "/readyz", "/metrics"):
        assert limited.get(path).status_code == 200
    keys = [k.decode() for k in redis_conn.get_redis().keys("*ratelimit*")]
    assert keys and not any(first.secret in k for k in keys)  # counted by the key's id, never its secret
    time.sleep(int(refused.headers["Retry-After"]))
    assert first.get("/v1/events?limit=1").status_code == 200  # Retry-After was enough


def test_without_redis_each_process_still_limits(clean, configured):
    private = PrivateRedis().start()
    ratelimit.reset()
    try:
        limited = configured(clean.with_(rate_limit=RATE, redis_url=private.url)).test_client()
        redis_conn.reset()
        api = builders.api(limited)
        assert api.get("/v1/events?limit=1").status_code == 200
        assert redis_conn.get_redis().keys("*ratelimit*")  # on Redis while it answers
        before = evalsha_calls(private.url)
        for _ in range(4):
            assert api.get("/v1/events?limit=1").status_code == 200
        assert evalsha_calls(private.url) - before == 4  # one round trip (one script) per request
        private.hang()  # hung: the next request waits REQUEST_TIMEOUT once, then Redis is marked down
        started = time.perf_counter()
        admitted, refused = until_refused(api)
        assert time.perf_counter() - started < 3
        assert RATE * ratelimit.BURST <= admitted <= RATE * ratelimit.BURST + 2
        assert_refusal(refused)
        assert builders.api(limited, "Other").get("/v1/events?limit=1").status_code == 200
        private.resume()
        private.stop()  # down (refused connections): still the in-memory limit
        admitted, refused = until_refused(builders.api(limited, "Third"))
        assert RATE * ratelimit.BURST <= admitted <= RATE * ratelimit.BURST + 2
    finally:
        private.stop()
        redis_conn.reset()
        ratelimit.reset()
