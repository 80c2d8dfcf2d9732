"""No loss: an event committed while Redis is down is delivered once Redis is back."""
from __future__ import annotations

import pytest

from app.adapters.redis_conn import get_redis
from app.services import switches
from app.services.webhooks import relay
from tests import builders
from tests.outage_support import PrivateRedis
from tests.webhook_support import create_endpoint, pump, webhook_config


@pytest.fixture
def private_redis(clean, configured):
    server = PrivateRedis()
    server.start()
    cfg = webhook_config(clean, redis_url=server.url)
    switches.reset_cache()
    yield server, configured(cfg)
    server.stop()
    switches.reset_cache()


def test_event_committed_while_redis_is_down_is_delivered_after(private_redis, receiver, monkeypatch):
    monkeypatch.setattr(relay, "CHUNK", 1)  # several batches, so the ones after a refused enqueue are covered
    server, app = private_redis
    api, r, others = builders.api(app.test_client()), receiver(), [receiver(), receiver()]
    endpoint = create_endpoint(api, r.url)
    for other in others:
        create_endpoint(api, other.url)
    a, b = api.account(funded=1000), api.account()
    server.stop()
    response = api.post("/v1/transfers", api.transfer_body(a["id"], b["id"], 100))
    assert response.status_code == 201, response.get_json()  # the transfer and its event commit without Redis
    assert relay.run_once()["relayed"] == 1  # deliveries written, nothing queued, nothing raised
    assert relay.run_once() == {"relayed": 0, "queued": 0}
    server.start()  # an empty Redis: whatever had been queued is gone
    pump(get_redis())
    assert [len(x.requests) for x in [r, *others]] == [1, 1, 1]
    assert r.requests[0]["headers"]["X-Request-Id"] == response.headers["X-Request-Id"]
    from standardwebhooks import Webhook

    Webhook(endpoint["secret"]).verify(r.requests[0]["body"], r.requests[0]["headers"])
