"""The circuit breaker against the real Redis of the run (server or embedded): its Lua scripts
open, half-open and close the circuit as app/services/breaker.py describes."""
import time

import pytest

from app.adapters.redis_conn import get_redis
from app.services import breaker

CHANNEL = "acq_alpha"


@pytest.fixture
def now(clean):
    return time.time()


def fail(times: int, now: float, channel: str = CHANNEL) -> None:
    for _ in range(times):
        breaker.record(channel, ok=False, now=now)


def test_a_new_channel_is_closed_and_allowed(now):
    assert breaker.state(CHANNEL) == "closed"
    assert breaker.allow(CHANNEL, now=now) is True


def test_fewer_faults_than_the_minimum_never_open(now):
    fail(breaker.MIN_CALLS - 1, now)
    assert breaker.state(CHANNEL) == "closed"
    assert breaker.allow(CHANNEL, now=now) is True


def test_faults_below_the_rate_do_not_open(now):
    for _ in range(breaker.MIN_CALLS):
        breaker.record(CHANNEL, ok=True, now=now)
    fail(breaker.MIN_CALLS - 1, now)  # 9 of 19 failed: under 50 %
    assert breaker.state(CHANNEL) == "closed"
    breaker.record(CHANNEL, ok=False, now=now)  # 10 of 20: at the rate
    assert breaker.state(CHANNEL) == "open"


def test_open_refuses_calls_and_other_channels_are_untouched(now):
    fail(breaker.MIN_CALLS, now)
    assert breaker.state(CHANNEL) == "open"
    assert breaker.allow(CHANNEL, now=now) is False
    assert breaker.allow("acq_beta", now=now) is True and breaker.state("acq_beta") == "closed"
    ttl = get_redis().ttl(f"payrouter:breaker:{CHANNEL}:open")
    assert 0 < ttl <= breaker.COOL_DOWN


def test_faults_older_than_the_window_are_forgotten(now):
    fail(breaker.MIN_CALLS - 1, now - breaker.BUCKET * breaker.WINDOW_BUCKETS)  # one bucket too old
    fail(1, now)
    assert breaker.state(CHANNEL) == "closed"


def _cool_down_over() -> None:
    get_redis().delete(f"payrouter:breaker:{CHANNEL}:open")


def test_half_open_lets_one_probe_through_and_a_good_probe_closes(now):
    fail(breaker.MIN_CALLS, now)
    _cool_down_over()
    assert breaker.allow(CHANNEL, now=now) is True  # the probe
    assert breaker.state(CHANNEL) == "half_open"
    assert breaker.allow(CHANNEL, now=now) is False  # one probe at a time
    breaker.record(CHANNEL, ok=True, now=now)
    assert breaker.state(CHANNEL) == "closed"
    assert [breaker.allow(CHANNEL, now=now) for _ in range(3)] == [True, True, True]  # the window was cleared


def test_a_failed_probe_opens_the_circuit_again(now):
    fail(breaker.MIN_CALLS, now)
    _cool_down_over()
    assert breaker.allow(CHANNEL, now=now) is True
    breaker.record(CHANNEL, ok=False, now=now)
    assert breaker.state(CHANNEL) == "open"
    assert breaker.allow(CHANNEL, now=now) is False


def test_the_probe_lease_runs_out_if_the_prober_dies(now):
    fail(breaker.MIN_CALLS, now)
    _cool_down_over()
    assert breaker.allow(CHANNEL, now=now) is True
    get_redis().delete(f"payrouter:breaker:{CHANNEL}:probe")  # as when PROBE_LEASE has passed
    assert breaker.allow(CHANNEL, now=now) is True


def test_a_probe_that_sent_nothing_is_given_back_and_counts_neither_way(now):
    """A probe call refused before sending (a merchant's unusable credentials, say) says nothing of
    the channel: released, the next call probes at once instead of waiting out the lease."""
    fail(breaker.MIN_CALLS, now)
    _cool_down_over()
    assert breaker.allow(CHANNEL, now=now) is True  # the probe
    breaker.release(CHANNEL)
    assert breaker.allow(CHANNEL, now=now) is True  # the next call probes (held: refused until the lease ran out)
    assert breaker.allow(CHANNEL, now=now) is False  # still one probe at a time
    breaker.record(CHANNEL, ok=True, now=now)
    assert breaker.state(CHANNEL) == "closed"
    breaker.release(CHANNEL)  # no probe held: nothing to give back, nothing counted
    assert breaker.state(CHANNEL) == "closed"


def test_redis_unreachable_keeps_the_circuit_closed(now, monkeypatch):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from tests.live import free_port

    nowhere = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5,  # nothing listens
                          retry=Retry(NoBackoff(), 1))  # as app.adapters.redis_conn's client
    monkeypatch.setattr(breaker, "get_redis", lambda: nowhere)
    monkeypatch.setattr(breaker, "_scripts", {})
    fail(breaker.MIN_CALLS, now)  # logged, not raised
    assert breaker.allow(CHANNEL, now=now) is True
    assert breaker.state(CHANNEL) == "closed"


def _window_successes(channel: str = CHANNEL) -> int:
    r = get_redis()
    return sum(int(r.hget(key, "ok") or 0) for key in r.scan_iter(f"payrouter:breaker:{channel}:b:*"))


def test_successes_are_counted_locally_and_reach_the_window_before_any_fault(now):
    for _ in range(breaker.MIN_CALLS):
        breaker.record(CHANNEL, ok=True)
    assert _window_successes() < breaker.MIN_CALLS  # not yet all added (at most one flush so far)
    breaker.record(CHANNEL, ok=False)  # judged against every success counted before it
    assert _window_successes() == breaker.MIN_CALLS
    breaker.record(CHANNEL, ok=True)
    time.sleep(breaker.FLUSH_SECONDS + 0.05)
    breaker.record(CHANNEL, ok=True)  # the first success after FLUSH_SECONDS adds what waited
    assert _window_successes() == breaker.MIN_CALLS + 2
    assert breaker.state(CHANNEL) == "closed"


def test_a_channel_seen_closed_costs_no_round_trip(now, monkeypatch):
    from app.adapters import notify

    deadline = time.monotonic() + 5
    while not notify.healthy() and time.monotonic() < deadline:  # trust needs the change notices
        time.sleep(0.05)
    assert breaker.allow(CHANNEL) is True  # asks Redis once

    def no_redis():
        raise AssertionError("Redis asked about a channel this process trusts")

    monkeypatch.setattr(breaker, "get_redis", no_redis)
    assert breaker.allow(CHANNEL) is True and breaker.state(CHANNEL) == "closed"
    breaker.record(CHANNEL, ok=True)


def test_a_circuit_opened_by_another_process_is_obeyed_within_two_seconds(now):
    import subprocess
    import sys

    from app.adapters import notify
    from app.config import get_config
    from tests.live import process_env

    deadline = time.monotonic() + 5
    while not notify.healthy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert breaker.allow(CHANNEL) is True and breaker.state(CHANNEL) == "closed"  # trusted from here on
    script = ("from app.services import breaker\n"
              f"for _ in range({breaker.MIN_CALLS}): breaker.record({CHANNEL!r}, ok=False)\n"
              f"assert breaker.state({CHANNEL!r}) == 'open'\n")
    subprocess.run([sys.executable, "-c", script], env=process_env(get_config()), check=True, timeout=60)
    opened = time.monotonic()
    while breaker.state(CHANNEL) != "open":
        assert time.monotonic() - opened < 2.0, "the open circuit was not obeyed within 2 s"
        time.sleep(0.02)
    assert breaker.allow(CHANNEL) is False


def test_the_apps_redis_client_fails_fast_when_redis_is_down(config):
    import redis

    from app.adapters import redis_conn
    from tests.live import free_port

    dead = config.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        redis_conn.get_redis(dead).ping()
    assert time.monotonic() - started < 1.0  # redis-py's default retries took about 5 s
