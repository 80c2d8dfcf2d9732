"""Routing strategies through the public API with the sandbox over HTTP (contract §1 ``scores``, §3):
``cost`` orders by each channel's cost for the amount; ``success_rate`` by outcomes counted in Redis
(real Redis: the suite's, or a private redis-server stopped to see the fallback)."""
from __future__ import annotations

import random
import time

import pytest

from app.adapters import redis_conn
from app.services import callbacks, routing, rules_store, success_rates
from app.services.rules_store import seed_default_rules
from tests import builders
from tests.outage_support import PrivateRedis
from tests.support import wait_until

RULES = """
rules:
  - id: usd-cards
    priority: 100
    when: {all: [{fact: currency, eq: USD}, {fact: payment_method.type, eq: card}]}
    then:
      route: %s
defaults: {route: [sandbox], fee: {percent: "1.0", fixed: 0}}
"""
COST = RULES % "{strategy: cost, channels: [acq_alpha, acq_beta]}"
RATE = RULES % "{strategy: success_rate, channels: [acq_alpha, acq_beta], min_samples: 10, exploration_percent: %d}"
BOTH = ("acq_alpha", "acq_beta")


def publish(source: str, api) -> int:
    version = rules_store.publish_and_announce(source, "test", "strategy rules")
    wait_until(lambda: api.post("/v1/routing/simulate", builders.payment_body(100)).get_json()["ruleset_version"]
               == version, what="the new rule set in use")
    return version


def simulate(api, amount: int) -> dict:
    response = api.post("/v1/routing/simulate", builders.payment_body(amount))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def seed(channel: str, succeeded: int, failed: int, *, now: float | None = None) -> None:
    success_rates.record([(channel, "payment", "card", "USD", True)] * succeeded
                         + [(channel, "payment", "card", "USD", False)] * failed, now=now)


def counts() -> dict:
    return success_rates.counts(BOTH, window_minutes=15, kind="payment", method="card", currency="USD")


def test_cost_routes_to_the_cheapest_channel_and_shows_each_cost(stack):
    api = builders.api(stack.client)
    publish(COST, api)
    # acq_alpha costs 1.8 % + 20, acq_beta 1.5 % + 25 (channels.yaml), rounded half-up as fees are.
    small = simulate(api, 100)
    assert small["candidates"] == ["acq_alpha", "acq_beta"] and small["strategy"] == "cost"
    assert small["scores"] == {"acq_alpha": {"cost": 22}, "acq_beta": {"cost": 27}}
    tie = simulate(api, 1700)  # 50.6 and 50.5: both 51, so the listed order stands
    assert tie["candidates"] == ["acq_alpha", "acq_beta"], tie
    assert tie["scores"] == {"acq_alpha": {"cost": 51}, "acq_beta": {"cost": 51}}
    big = simulate(api, 100_000)
    assert big["candidates"] == ["acq_beta", "acq_alpha"] and big["scores"]["acq_beta"] == {"cost": 1525}
    payment = api.post("/v1/payments", builders.payment_body(100_000)).get_json()
    assert payment["status"] == "succeeded" and payment["attempts"][0]["channel"] == "acq_beta"
    routing_ = api.get(f"/v1/payments/{payment['id']}").get_json()["routing"]
    assert routing_["channel"] == "acq_beta" and routing_["strategy"] == "cost"
    assert routing_["scores"] == {"acq_alpha": {"cost": 1820}, "acq_beta": {"cost": 1525}}


def test_success_rate_orders_by_seeded_outcomes_within_the_window(stack):
    api = builders.api(stack.client)
    publish(RATE % 0, api)
    seed("acq_alpha", 4, 6)
    seed("acq_beta", 9, 1)
    seed("acq_beta", 0, 50, now=time.time() - 16 * 60)  # outside the 15-minute window: not counted
    decision = simulate(api, 1000)
    assert decision["candidates"] == ["acq_beta", "acq_alpha"], decision
    assert decision["strategy"] == "success_rate" and "strategy_fallback" not in decision
    assert decision["scores"] == {"acq_alpha": {"score": 0.4, "samples": 10}, "acq_beta": {"score": 0.9, "samples": 10}}
    payment = api.post("/v1/payments", builders.payment_body(1000)).get_json()
    assert payment["routing"]["channel"] == "acq_beta" and payment["routing"]["scores"] == decision["scores"]
    assert counts()["acq_beta"] == (10, 11)  # that payment's success counted


def test_outcomes_count_where_attempts_close(stack):
    api = builders.api(stack.client)
    publish(RATE % 0, api)
    assert counts() == {"acq_alpha": (0, 0), "acq_beta": (0, 0)}
    api.post("/v1/payments", builders.payment_body(1000))  # succeeded on acq_alpha
    api.post("/v1/payments", builders.payment_body(1051))  # declined: a failure
    assert counts() == {"acq_alpha": (1, 2), "acq_beta": (0, 0)}
    api.post("/v1/payments", builders.payment_body(1055))  # HTTP 500 on both: two channel faults
    assert counts() == {"acq_alpha": (1, 3), "acq_beta": (0, 1)}
    late = api.post("/v1/payments", builders.payment_body(1052)).get_json()  # settled by its callback
    assert late["status"] == "processing"
    wait_until(lambda: callbacks.drain() == 1, what="the callback received and applied (a drain batch)")
    assert counts()["acq_alpha"] == (2, 4)
    withdrawal_key = success_rates.counts(BOTH, window_minutes=15, kind="withdrawal", method=None, currency="USD")
    assert withdrawal_key == {"acq_alpha": (0, 0), "acq_beta": (0, 0)}


def test_exploration_sends_a_seeded_share_in_random_order(stack, monkeypatch):
    api = builders.api(stack.client)
    publish(RATE % 50, api)
    seed("acq_alpha", 2, 18)
    seed("acq_beta", 20, 0)
    monkeypatch.setattr(routing.Availability, "rng", random.Random(11))
    decisions = [simulate(api, 1000) for _ in range(40)]
    explored = [d for d in decisions if d.get("exploration")]
    assert 8 <= len(explored) <= 32, len(explored)
    assert all(d["candidates"] == ["acq_beta", "acq_alpha"] for d in decisions if not d.get("exploration"))
    assert {tuple(d["candidates"]) for d in explored} == {BOTH, BOTH[::-1]}  # a random order: both seen
    monkeypatch.setattr(routing.Availability, "rng", random.Random(11))
    assert [simulate(api, 1000)["candidates"] for _ in range(40)] == [d["candidates"] for d in decisions]


LIMITED = RATE.replace("exploration_percent: %d}", "exploration_percent: %d}\n"
                                                   "      limits: {daily_count: {per: customer, max: 2}}")


def round_trips(monkeypatch) -> list[bytes]:
    """What the request path sends to Redis, one entry per round trip (a pipeline is one), recorded by
    wrapping the request client's real connection (app.adapters.redis_conn)."""
    sent: list[bytes] = []
    original = redis_conn._Guarded.send_packed_command

    def counting(self, command, *args, **kwargs):
        chunks = command if isinstance(command, (list, tuple)) else [command]
        sent.append(b"".join(bytes(chunk) for chunk in chunks))
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(redis_conn._Guarded, "send_packed_command", counting)
    return sent


def test_scores_are_read_in_the_round_trip_of_the_limit_reservation(stack, monkeypatch):
    """A payment whose route is success_rate and whose rules set daily limits: the window's MGET and
    the reservation script go to the real Redis in ONE round trip, and both take effect."""
    api = builders.api(stack.client)
    publish(LIMITED % 0, api)
    seed("acq_alpha", 4, 6)
    seed("acq_beta", 9, 1)
    customer = {"id": builders.unique("cus"), "country": "US"}
    sent = round_trips(monkeypatch)
    paid = api.post("/v1/payments", builders.payment_body(1000, customer=customer))
    assert paid.status_code == 201, paid.get_json()
    routing_ = paid.get_json()["routing"]
    assert routing_["channel"] == "acq_beta" and routing_["scores"]["acq_beta"] == {"score": 0.9, "samples": 10}
    reads = [trip for trip in sent if b"MGET" in trip and b"sr:ok:acq_alpha:payment:card:USD:" in trip]
    reserves = [trip for trip in sent if b"EVAL" in trip and b"payrouter:limit:" in trip and b"INCRBY" in trip]
    assert len(reads) == 1 and reserves == reads, (len(reads), len(reserves))
    # both took effect: the counter of the customer's daily_count, and on the third payment a refusal
    # that shows the scores read with it
    assert api.post("/v1/payments", builders.payment_body(1000, customer=customer)).status_code == 201
    refused = api.post("/v1/payments", builders.payment_body(1000, customer=customer))
    assert refused.status_code == 402 and refused.get_json()["error"]["code"] == "limit_exceeded"
    decision = refused.get_json()["error"]["decision"]
    assert decision["scores"]["acq_alpha"]["samples"] >= 10 and decision["strategy"] == "success_rate"
    # without daily limits the scores are still one round trip: the MGET alone
    publish(RATE % 0, api)
    sent.clear()
    assert api.post("/v1/payments", builders.payment_body(1000)).status_code == 201
    reads = [trip for trip in sent if b"MGET" in trip and b"sr:ok:acq_alpha:payment:card:USD:" in trip]
    assert len(reads) == 1 and not any(b"EVAL" in trip and b"payrouter:limit:" in trip for trip in sent)


@pytest.fixture
def private_redis(clean, configured):
    """A Redis of the test's own, and a client of an app on it."""
    private = PrivateRedis().start()
    client = configured(clean.with_(redis_url=private.url)).test_client()
    redis_conn.reset()
    yield private, client
    private.stop()
    redis_conn.reset()


@pytest.fixture
def rated_on_private_redis(private_redis):
    """``build(source)``: the default rules, then ``source`` published, on the private Redis, where
    acq_beta succeeded 20 of 20 times and acq_alpha 0 of 20; gives ``(the private Redis, an api)``."""
    private, client = private_redis

    def build(source: str):
        seed_default_rules()
        api = builders.api(client)
        publish(source, api)
        seed("acq_alpha", 0, 20)
        seed("acq_beta", 20, 0)
        return private, api
    return build


def test_without_redis_success_rate_keeps_the_listed_order_and_says_so(rated_on_private_redis):
    private_redis, api = rated_on_private_redis(RATE % 0)
    assert simulate(api, 1000)["candidates"] == ["acq_beta", "acq_alpha"]
    private_redis.stop()
    decision = simulate(api, 1000)
    assert decision["candidates"] == ["acq_alpha", "acq_beta"], decision
    assert decision["strategy"] == "success_rate" and decision["strategy_fallback"] == "redis_unavailable"
    assert "scores" not in decision


def test_without_redis_a_limited_success_rate_payment_is_refused_showing_the_fallback(rated_on_private_redis):
    """The round trip that reads the scores and reserves the limits fails as one: the limits refuse
    (402 limit_unavailable, nothing moves past an unchecked limit) and the decision says why its order
    is the listed one."""
    private_redis, api = rated_on_private_redis(LIMITED % 0)
    private_redis.stop()
    refused = api.post("/v1/payments", builders.payment_body(1000))
    assert refused.status_code == 402, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "limit_unavailable" and error["decision"]["candidates"] == ["acq_alpha", "acq_beta"]
    assert error["decision"]["strategy_fallback"] == "redis_unavailable" and "scores" not in error["decision"]


def test_replay_of_a_cost_draft_counts_the_channels_it_would_change(stack):
    from app.services import rules_replay

    api = builders.api(stack.client)
    publish(RULES % "[acq_alpha, acq_beta]", api)
    for amount in (100_000, 100):
        assert api.post("/v1/payments", builders.payment_body(amount)).get_json()["status"] == "succeeded"
    result = rules_replay.replay(COST, last=2)
    # 100000: acq_beta is cheaper (1525 against 1820); 100: acq_alpha stays the cheaper (22 against 27)
    assert result["replayed"] == 2 and result["counts"] == {"channel": 1, "fee": 0, "decline": 0}, result
    (example,) = result["examples"]["channel"]
    assert example["amount"] == 100_000 and (example["live"]["channel"], example["draft"]["channel"]) == BOTH
