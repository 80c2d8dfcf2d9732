"""/v1/webhook_endpoints: CRUD, URL checks, the secret shown once, merchant scoping, lists."""
from __future__ import annotations

import base64

import pytest

from tests import builders
from tests.webhook_support import create_endpoint


@pytest.fixture
def strict_client(clean, configured):
    return configured(clean.with_(allow_private_webhooks=False)).test_client()


def test_create_shows_the_secret_once(wh_client):
    api = builders.api(wh_client)
    created = create_endpoint(api, "http://127.0.0.1:9/hooks", ["transfer.succeeded", "payment.failed"])
    assert created["id"].startswith("we_") and created["object"] == "webhook_endpoint"
    assert created["enabled_events"] == ["transfer.succeeded", "payment.failed"]
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"), validate=True)) >= 24
    fetched = api.get(f"/v1/webhook_endpoints/{created['id']}").get_json()
    assert "secret" not in fetched
    assert fetched == {k: v for k, v in created.items() if k != "secret"}
    listed = api.get("/v1/webhook_endpoints").get_json()
    assert [e["id"] for e in listed["data"]] == [created["id"]] and "secret" not in listed["data"][0]


def test_list_is_paginated_newest_first(wh_client):
    api = builders.api(wh_client)
    ids = [create_endpoint(api, f"http://127.0.0.1:9/h{i}")["id"] for i in range(3)]
    first = api.get("/v1/webhook_endpoints?limit=2").get_json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [e["id"] for e in first["data"]] == ids[::-1][:2]
    rest = api.get(f"/v1/webhook_endpoints?limit=2&starting_after={first['data'][-1]['id']}").get_json()
    assert [e["id"] for e in rest["data"]] == [ids[0]] and rest["has_more"] is False


def test_delete_and_cross_merchant_404(wh_client):
    api, other = builders.api(wh_client), builders.api(wh_client, "Other")
    endpoint = create_endpoint(api, "http://127.0.0.1:9/hooks")
    eid = endpoint["id"]
    for response in (other.get(f"/v1/webhook_endpoints/{eid}"),
                     other.client.delete(f"/v1/webhook_endpoints/{eid}", headers=other.headers()),
                     other.post(f"/v1/webhook_endpoints/{eid}/rotate_secret", {}),
                     other.get(f"/v1/webhook_endpoints/{eid}/deliveries")):
        assert response.status_code == 404, response.get_json()
        assert response.get_json()["error"]["type"] == "invalid_request_error"
    assert other.get("/v1/webhook_endpoints").get_json()["data"] == []
    response = api.client.delete(f"/v1/webhook_endpoints/{eid}", headers=api.headers())
    assert response.status_code == 200 and response.get_json() == {"id": eid, "object": "webhook_endpoint",
                                                                    "deleted": True}
    assert api.get(f"/v1/webhook_endpoints/{eid}").status_code == 404
    assert api.client.delete(f"/v1/webhook_endpoints/{eid}", headers=api.headers()).status_code == 404
    assert api.get("/v1/webhook_endpoints").get_json()["data"] == []


@pytest.mark.parametrize("body, param", [
    ({"url": "ftp://example.com/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "https://93.184.215.14/hooks", "enabled_events": ["transfer.created"]}, "enabled_events[0]"),
    ({"url": "https://93.184.215.14/hooks", "enabled_events": []}, "enabled_events"),
    ({"url": "https://93.184.215.14/hooks"}, "enabled_events"),
    ({"url": "https://93.184.215.14/hooks", "enabled_events": ["*"], "secret": "mine"}, "secret"),
    ({"url": "http://127.0.0.1:8000/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "http://localhost/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "http://10.1.2.3/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "http://192.168.0.10/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "http://169.254.169.254/latest/meta-data", "enabled_events": ["*"]}, "url"),
    ({"url": "http://[::1]:8080/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "http://[::ffff:127.0.0.1]/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "http://user:pw@93.184.215.14/hooks", "enabled_events": ["*"]}, "url"),
    # IPv6 forms that carry and reach an IPv4 address: 6to4, NAT64, IPv4-compatible
    ({"url": "http://[2002:7f00:1::]/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "http://[2002:a00:1::]/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "http://[64:ff9b::7f00:1]/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "http://[64:ff9b::a9fe:a9fe]/hooks", "enabled_events": ["*"]}, "url"),
    ({"url": "http://[::127.0.0.1]/hooks", "enabled_events": ["*"]}, "url"),
])
def test_bad_endpoints_are_400(strict_client, body, param):
    api = builders.api(strict_client)
    response = api.post("/v1/webhook_endpoints", body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["param"] == param
    assert api.get("/v1/webhook_endpoints").get_json()["data"] == []


def test_public_ip_is_accepted_without_the_private_switch(strict_client):
    api = builders.api(strict_client)
    assert create_endpoint(api, "https://93.184.215.14/hooks")["url"] == "https://93.184.215.14/hooks"
    assert create_endpoint(api, "https://[2002:5db8:d70e::1]/hooks")  # 6to4 of a public address


def test_rotate_secret_validates_its_body(wh_client):
    api = builders.api(wh_client)
    eid = create_endpoint(api, "http://127.0.0.1:9/hooks")["id"]
    for body, param in (({"overlap_seconds": -1}, "overlap_seconds"), ({"overlap_seconds": "1"}, "overlap_seconds"),
                        ({"other": 1}, "other")):
        response = api.post(f"/v1/webhook_endpoints/{eid}/rotate_secret", body)
        assert response.status_code == 400 and response.get_json()["error"]["param"] == param
    key = builders.unique("idem")
    first = api.post(f"/v1/webhook_endpoints/{eid}/rotate_secret", {}, key=key)
    again = api.post(f"/v1/webhook_endpoints/{eid}/rotate_secret", {}, key=key)
    assert first.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json()["secret"] == first.get_json()["secret"]


def test_redeliver_unknown_event_is_404(wh_client):
    api = builders.api(wh_client)
    assert api.post("/v1/events/evt_missing/redeliver", {}).status_code == 404
    assert api.get("/v1/events/evt_missing/deliveries").status_code == 404
