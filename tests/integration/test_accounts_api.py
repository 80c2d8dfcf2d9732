"""Accounts: create, retrieve, list with cursors, ledger lines, tenant isolation, auth."""
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import Account
from tests import builders


def test_create_and_retrieve_account(client):
    api = builders.api(client)
    body = {"currency": "JPY", "customer": {"id": "c-1", "country": "JP", "email": "a@b.jp"},
            "reference": "wallet-1", "metadata": {"tier": "gold"}}
    response = api.post("/v1/accounts", body)
    assert response.status_code == 201
    account = response.get_json()
    assert account["id"].startswith("acct_") and account["object"] == "account"
    assert account["balance"] == {"available": 0, "pending": 0}
    assert account["customer"] == body["customer"] and account["metadata"] == {"tier": "gold"}
    assert account["created_at"].endswith("Z")
    again = api.get(f"/v1/accounts/{account['id']}")
    assert again.status_code == 200 and again.get_json() == account


def test_rows_record_the_request_id(client):
    api = builders.api(client)
    response = api.post("/v1/accounts", {"currency": "USD", "customer": {"id": "c"}}, **{"X-Request-Id": "trace-42"})
    assert response.headers["X-Request-Id"] == "trace-42"
    with unit_of_work() as session:
        row = session.get(Account, response.get_json()["id"])
        assert row.request_id == "trace-42"


def test_request_id_generated_when_absent(client):
    response = client.get("/healthz")
    assert response.headers["X-Request-Id"].startswith("req_")


def test_list_paginates_newest_first(client):
    api = builders.api(client)
    ids = [api.account()["id"] for _ in range(5)]
    first = api.get("/v1/accounts?limit=2").get_json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [a["id"] for a in first["data"]] == ids[::-1][:2]
    second = api.get(f"/v1/accounts?limit=2&starting_after={first['data'][-1]['id']}").get_json()
    third = api.get(f"/v1/accounts?limit=2&starting_after={second['data'][-1]['id']}").get_json()
    seen = [a["id"] for page in (first, second, third) for a in page["data"]]
    assert seen == ids[::-1] and third["has_more"] is False


def test_default_limit_is_ten(client):
    api = builders.api(client)
    for _ in range(11):
        api.account()
    page = api.get("/v1/accounts").get_json()
    assert len(page["data"]) == 10 and page["has_more"] is True


def test_entries_list_ledger_lines(client):
    api = builders.api(client)
    account = api.account(funded=700)
    assert account["balance"]["available"] == 700
    entries = api.get(f"/v1/accounts/{account['id']}/entries").get_json()
    assert [(e["amount"], e["kind"]) for e in entries["data"]] == [(700, "test_funding")]


def test_other_merchants_objects_are_404_like_unknown_ids(client):
    mine, theirs = builders.api(client, "Mine"), builders.api(client, "Theirs")
    account = theirs.account(funded=100)
    other = theirs.account()
    transfer = theirs.post("/v1/transfers", theirs.transfer_body(account["id"], other["id"], 10)).get_json()
    for path in (f"/v1/accounts/{account['id']}", f"/v1/accounts/{account['id']}/entries",
                 f"/v1/transfers/{transfer['id']}"):
        foreign, unknown = mine.get(path), mine.get(path.replace(path.split("/")[3], "acct_doesnotexist"))
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.get_json()["error"]["type"] == "invalid_request_error"
        assert foreign.get_json()["error"]["code"] == unknown.get_json()["error"]["code"] == "resource_missing"
    assert mine.get("/v1/accounts").get_json()["data"] == []
    assert mine.get("/v1/transfers").get_json()["data"] == []
    mine_acct = mine.account(funded=50)
    response = mine.post("/v1/transfers", mine.transfer_body(mine_acct["id"], account["id"], 10))
    assert response.status_code == 404
    assert response.get_json()["error"]["param"] == "to_account"


def test_authentication_errors(client):
    api = builders.api(client)
    for headers in ({}, {"Authorization": "Bearer sk_test_nope"}, {"Authorization": "Basic abc"},
                    {"Authorization": f"Bearer {api.secret}x"}):
        response = client.get("/v1/accounts", headers=headers)
        assert response.status_code == 401
        error = response.get_json()["error"]
        assert error["type"] == "authentication_error" and error["code"] and error["request_id"]


def test_revoked_key_stops_working(client):
    from app.adapters.models import ApiKey
    from app.services.merchants import hash_key, revoke_key

    api = builders.api(client)
    assert api.get("/v1/accounts").status_code == 200
    with unit_of_work() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(api.secret))).one()
        revoke_key(session, key.id)
    assert api.get("/v1/accounts").status_code == 401


def test_only_a_hash_of_the_key_is_stored(client):
    from app.adapters.models import ApiKey

    api = builders.api(client)
    with unit_of_work() as session:
        stored = [(k.key_hash, k.prefix) for k in session.scalars(select(ApiKey))]
    assert all(api.secret not in h for h, _ in stored)
    assert any(api.secret.startswith(p) and len(p) < len(api.secret) for _, p in stored)
