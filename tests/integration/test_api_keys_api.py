"""Keys the merchant manages (/v1/api_keys): create (shown once, optional expiry), list, roll with an
overlap, revoke (refused at once, never the last live key)."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import update

from app.adapters.db import unit_of_work
from app.adapters.models import ApiKey
from tests import builders
from tests.support import wait_until


def _as(api, secret: str) -> builders.Api:
    return builders.Api(api.client, secret, api.merchant_id)


def _keys(api) -> dict[str, dict]:
    response = api.get("/v1/api_keys?limit=100")
    assert response.status_code == 200, response.get_json()
    return {k["id"]: k for k in response.get_json()["data"]}


def test_create_list_and_use_a_new_key(client):
    api = builders.api(client)
    (first,) = _keys(api).values()
    assert first["prefix"] == api.secret[:12] and "secret" not in first and first["status"] == "active"
    assert first["last_used_at"] is not None  # this very request used it
    response = api.post("/v1/api_keys", {}, key="create-1")
    assert response.status_code == 201, response.get_json()
    made = response.get_json()
    assert made["object"] == "api_key" and made["livemode"] is False and made["secret"].startswith("sk_test_")
    assert made["prefix"] == made["secret"][:12] and made["last_used_at"] is None and made["expires_at"] is None
    # the same Idempotency-Key replays the creation (the secret with it, while the key is live): no second key
    again = api.post("/v1/api_keys", {}, key="create-1")
    assert again.headers.get("Idempotent-Replayed") == "true" and again.get_json() == made
    listed = _keys(api)
    assert set(listed) == {first["id"], made["id"]} and "secret" not in listed[made["id"]]
    new = _as(api, made["secret"])
    assert new.get("/v1/accounts").status_code == 200
    assert new.get(f"/v1/api_keys/{made['id']}").get_json()["last_used_at"] is not None
    with unit_of_work() as session:  # only the hash is stored
        stored = session.get(ApiKey, made["id"])
        assert made["secret"] not in (stored.key_hash, stored.prefix)


def test_a_key_with_an_expiry_stops_working_then(client):
    api = builders.api(client)
    soon = int(time.time()) + 2
    made = api.post("/v1/api_keys", {"expires_at": soon}).get_json()
    assert made["expires_at"] == datetime.fromtimestamp(soon, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = _as(api, made["secret"])
    assert new.get("/v1/accounts").status_code == 200
    wait_until(lambda: new.get("/v1/accounts").status_code == 401, timeout=5)
    assert _keys(api)[made["id"]]["status"] == "expired"


def test_bad_key_bodies(client):
    api = builders.api(client)
    for body, param, code in (({"expires_at": int(time.time()) - 10}, "expires_at", "parameter_invalid"),
                              ({"expires_at": "tomorrow"}, "expires_at", "parameter_invalid"),
                              ({"expires_at": 2**70}, "expires_at", "parameter_invalid"),
                              ({"name": "x"}, "name", "parameter_unknown")):
        response = api.post("/v1/api_keys", body)
        assert response.status_code == 400, response.get_json()
        assert (response.get_json()["error"]["param"], response.get_json()["error"]["code"]) == (param, code)
    key_id = next(iter(_keys(api)))
    for body, param in (({"overlap_seconds": -1}, "overlap_seconds"), ({"overlap_seconds": 604801}, "overlap_seconds"),
                        ({"overlap": 5}, "overlap")):
        response = api.post(f"/v1/api_keys/{key_id}/roll", body)
        assert response.status_code == 400 and response.get_json()["error"]["param"] == param
    assert api.post(f"/v1/api_keys/{key_id}/revoke", {"now": True}).status_code == 400
    assert api.post("/v1/api_keys/key_nosuch/revoke", None).status_code == 404


def test_the_last_live_key_cannot_be_revoked(client):
    api = builders.api(client)
    (only,) = _keys(api)
    response = api.post(f"/v1/api_keys/{only}/revoke", None)
    assert response.status_code == 409, response.get_json()
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "last_api_key"
    assert "last active test-mode key" in error["message"] and "POST /v1/api_keys" in error["message"]
    assert api.get("/v1/accounts").status_code == 200
    # an expired key does not count as live: the only live key is still the last one
    from app.services.merchants import issue_key

    with unit_of_work() as session:
        issue_key(session, api.merchant_id, "test", datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(1))
    assert api.post(f"/v1/api_keys/{only}/revoke", None).status_code == 409


def test_revoke_with_another_key_and_the_revoked_key_is_refused_at_once(client, monkeypatch):
    from app.services import merchants

    # a cached key would stay good for a minute: only the revocation dropping the cache refuses it now
    monkeypatch.setattr(merchants, "AUTH_CACHE_SECONDS", 60.0)
    api = builders.api(client)
    (old,) = _keys(api)
    made = api.post("/v1/api_keys", {}).get_json()
    new = _as(api, made["secret"])
    assert api.get("/v1/accounts").status_code == 200  # cached now
    response = new.post(f"/v1/api_keys/{old}/revoke", None)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "revoked" and response.get_json()["revoked_at"]
    assert api.get("/v1/accounts").status_code == 401  # at once: the cache was dropped
    assert new.get("/v1/accounts").status_code == 200
    # now the new key is the last one
    assert new.post(f"/v1/api_keys/{made['id']}/revoke", None).status_code == 409
    # revoking a revoked key again changes nothing
    again = new.post(f"/v1/api_keys/{old}/revoke", None)
    assert again.status_code == 200 and again.get_json()["revoked_at"] == response.get_json()["revoked_at"]


def test_roll_with_an_overlap_then_the_old_key_stops(client):
    api = builders.api(client)
    (old,) = _keys(api)
    response = api.post(f"/v1/api_keys/{old}/roll", {"overlap_seconds": 60})
    assert response.status_code == 200, response.get_json()
    rolled = response.get_json()
    assert rolled["id"] != old and rolled["secret"].startswith("sk_test_")
    new = _as(api, rolled["secret"])
    assert api.get("/v1/accounts").status_code == 200 and new.get("/v1/accounts").status_code == 200
    listed = _keys(new)
    assert listed[old]["status"] == "active" and listed[old]["expires_at"]
    # the overlap runs out (made to, here: the row's expiry moved to the past), and the old key is refused
    with unit_of_work() as session:
        session.execute(update(ApiKey).where(ApiKey.id == old)
                        .values(expires_at=datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=1)))
    wait_until(lambda: api.get("/v1/accounts").status_code == 401, timeout=2)
    assert new.get("/v1/accounts").status_code == 200
    assert new.post(f"/v1/api_keys/{old}/roll", None).status_code == 409  # an expired key is not rolled


def test_roll_without_overlap_revokes_at_once(client, monkeypatch):
    from app.services import merchants

    monkeypatch.setattr(merchants, "AUTH_CACHE_SECONDS", 60.0)
    api = builders.api(client)
    (old,) = _keys(api)
    assert api.get("/v1/accounts").status_code == 200
    rolled = api.post(f"/v1/api_keys/{old}/roll", None).get_json()
    assert api.get("/v1/accounts").status_code == 401
    assert _as(api, rolled["secret"]).get("/v1/accounts").status_code == 200


def test_keys_of_the_other_mode_and_of_other_merchants_are_404(client):
    api = builders.api(client)
    other = builders.api(client, "Other")
    (other_key,) = _keys(other)
    (mine,) = _keys(api)
    assert api.get(f"/v1/api_keys/{other_key}").status_code == 404
    assert api.post(f"/v1/api_keys/{other_key}/revoke", None).status_code == 404
    assert api.post(f"/v1/api_keys/{other_key}/roll", None).status_code == 404
    live = builders.Api(client, _live_key(api.merchant_id), api.merchant_id)
    assert set(_keys(live)).isdisjoint({mine}) and live.get(f"/v1/api_keys/{mine}").status_code == 404


def _live_key(merchant_id: str) -> str:
    from app.services.merchants import issue_key

    with unit_of_work() as session:
        return issue_key(session, merchant_id, "live").secret
