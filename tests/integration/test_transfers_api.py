"""Transfers: atomic moves, refusals that write nothing, events."""
from sqlalchemy import func, select

from app.adapters.db import unit_of_work
from app.adapters.models import Event, JournalEntry, Transfer
from tests import builders


def counts():
    with unit_of_work() as session:
        return tuple(session.scalar(select(func.count()).select_from(m)) for m in (Transfer, JournalEntry, Event))


def test_transfer_moves_money_and_records_an_event(client):
    api = builders.api(client)
    a, b = api.account(funded=1000), api.account()
    response = api.post("/v1/transfers", api.transfer_body(a["id"], b["id"], 250, metadata={"order": "o-1"}))
    assert response.status_code == 201
    transfer = response.get_json()
    assert transfer["status"] == "succeeded" and transfer["id"].startswith("tr_")
    assert transfer["metadata"] == {"order": "o-1"}
    assert api.get(f"/v1/accounts/{a['id']}").get_json()["balance"]["available"] == 750
    assert api.get(f"/v1/accounts/{b['id']}").get_json()["balance"]["available"] == 250
    events = api.get("/v1/events").get_json()["data"]
    assert [e["type"] for e in events] == ["transfer.succeeded"]
    assert events[0]["data"]["object"]["id"] == transfer["id"]
    assert api.get(f"/v1/events/{events[0]['id']}").get_json() == events[0]
    assert api.get(f"/v1/transfers/{transfer['id']}").get_json() == transfer


def test_insufficient_funds_is_402_and_writes_nothing(client):
    api = builders.api(client)
    a, b = api.account(funded=100), api.account()
    before = counts()
    response = api.post("/v1/transfers", api.transfer_body(a["id"], b["id"], 101))
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["type"] == "payment_declined" and error["code"] == "insufficient_funds"
    assert counts() == before
    assert api.get(f"/v1/accounts/{a['id']}").get_json()["balance"]["available"] == 100


def test_refusals(client):
    api = builders.api(client)
    usd, usd2, eur = api.account(funded=100), api.account(), api.account("EUR")
    cases = [
        (api.transfer_body(usd["id"], usd["id"], 10), 400, "to_account"),
        (api.transfer_body(usd["id"], eur["id"], 10), 422, "currency"),
        (api.transfer_body(usd["id"], usd2["id"], 10, currency="EUR"), 422, "currency"),
        (api.transfer_body(usd["id"], "acct_missing", 10), 404, "to_account"),
    ]
    for body, status, param in cases:
        response = api.post("/v1/transfers", body)
        assert response.status_code == status, response.get_json()
        assert response.get_json()["error"]["param"] == param
    assert counts()[0] == 0


def test_reference_is_unique_per_merchant(client):
    api, other = builders.api(client), builders.api(client, "Other")
    a, b = api.account(funded=100), api.account()
    body = api.transfer_body(a["id"], b["id"], 10)
    assert api.post("/v1/transfers", body).status_code == 201
    second = api.post("/v1/transfers", body)  # same reference, new idempotency key
    assert second.status_code == 422 and second.get_json()["error"]["code"] == "reference_already_used"
    c, d = other.account(funded=100), other.account()
    assert other.post("/v1/transfers", {**body, "from_account": c["id"], "to_account": d["id"]}).status_code == 201
