"""Orders (contract §1): payments and refunds attached to the merchant's sale, over the real sandbox."""
from __future__ import annotations

import json

from sqlalchemy import select
from standardwebhooks import Webhook

from app.adapters.db import unit_of_work
from app.adapters.models import Event, Operation
from tests import builders
from tests.integration.test_livemode import _live_key
from tests.webhook_support import create_endpoint, pump, webhook_config


def order_body(amount: int, currency: str = "USD", **fields) -> dict:
    return {"amount": amount, "currency": currency, "reference": builders.unique("order"), **fields}


def make_order(api, amount: int, **fields) -> dict:
    response = api.post("/v1/orders", order_body(amount, **fields))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def pay(api, order: dict, amount: int, status: int = 201, **fields):
    response = api.post("/v1/payments", builders.payment_body(amount, order=order["id"], **fields))
    assert response.status_code == status, response.get_json()
    return response.get_json()


def refund(api, payment: dict, amount: int) -> dict:
    response = api.post("/v1/refunds", {"payment": payment["id"], "amount": amount, "reference": builders.unique("re")})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def order_events(order_id: str) -> list[str]:
    with unit_of_work() as session:
        return list(session.scalars(select(Event.type).where(Event.object_id == order_id)))


def test_a_failed_then_a_succeeded_payment_two_partial_refunds_and_an_overpayment_refused(stack):
    api = builders.api(stack.client)
    order = make_order(api, 2_000, customer={"id": "cus_1", "country": "US"}, metadata={"cart": "7"})
    assert {k: order[k] for k in ("object", "status", "amount_paid", "amount_refunded", "payments", "refunds",
                                  "livemode", "metadata")} == {
        "object": "order", "status": "open", "amount_paid": 0, "amount_refunded": 0, "payments": [], "refunds": [],
        "livemode": False, "metadata": {"cart": "7"}}
    assert order["id"].startswith("ord_")

    declined = pay(api, order, 1_951)  # the sandbox declines amounts ending in 51
    assert declined["status"] == "failed" and declined["order"] == order["id"]
    seen = api.get(f"/v1/orders/{order['id']}").get_json()
    assert (seen["status"], seen["amount_paid"], seen["payments"]) == ("open", 0, [declined["id"]])

    # The retry: a new payment with a new reference naming the same order.
    paid = pay(api, order, 2_000)
    assert paid["status"] == "succeeded" and paid["order"] == order["id"]
    seen = api.get(f"/v1/orders/{order['id']}").get_json()
    assert (seen["status"], seen["amount_paid"], seen["payments"]) == ("paid", 2_000, [declined["id"], paid["id"]])
    assert order_events(order["id"]) == ["order.paid"]

    # Paid in full: another payment would pay it beyond its amount, and is refused before any channel call.
    refused = api.post("/v1/payments", builders.payment_body(100, order=order["id"]))
    assert refused.status_code == 409, refused.get_json()
    error = refused.get_json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "order_amount_exceeded",
                                                              "amount")
    assert "at most 0 more" in error["message"]
    with unit_of_work() as session:  # nothing was written for it
        assert sorted(session.scalars(select(Operation.id).where(Operation.order_id == order["id"]))) == sorted(
            [declined["id"], paid["id"]])

    first = refund(api, paid, 500)
    assert first["order"] == order["id"]
    seen = api.get(f"/v1/orders/{order['id']}").get_json()
    assert (seen["status"], seen["amount_refunded"], seen["refunds"]) == ("partially_refunded", 500, [first["id"]])
    second = refund(api, paid, 1_500)
    seen = api.get(f"/v1/orders/{order['id']}").get_json()
    assert (seen["status"], seen["amount_paid"], seen["amount_refunded"], seen["refunds"]) == (
        "refunded", 2_000, 2_000, [first["id"], second["id"]])
    assert api.post("/v1/payments", builders.payment_body(1, order=order["id"])).status_code == 409
    assert order_events(order["id"]) == ["order.paid"]  # once per transition, whatever follows


def test_a_payment_in_flight_holds_its_share_until_it_is_final(stack):
    api = builders.api(stack.client)
    order = make_order(api, 3_000)
    pending = pay(api, order, 2_052)  # processing; its callback succeeds later
    assert pending["status"] == "processing"
    refused = api.post("/v1/payments", builders.payment_body(1_000, order=order["id"]))
    assert refused.status_code == 409 and "2052 held by payments not yet final" in refused.get_json()["error"][
        "message"]
    rest = pay(api, order, 948)
    assert rest["status"] == "succeeded"
    assert api.get(f"/v1/orders/{order['id']}").get_json()["status"] == "open"
    assert order_events(order["id"]) == []
    stack.settle(api, f"/v1/payments/{pending['id']}")
    seen = api.get(f"/v1/orders/{order['id']}").get_json()
    assert (seen["status"], seen["amount_paid"]) == ("paid", 3_000)
    assert order_events(order["id"]) == ["order.paid"]


def test_a_payment_that_fails_later_gives_its_share_back(stack):
    api = builders.api(stack.client)
    order = make_order(api, 2_053)
    pending = pay(api, order, 2_053)  # processing; its callback fails it
    assert api.post("/v1/payments", builders.payment_body(100, order=order["id"])).status_code == 409
    assert stack.settle(api, f"/v1/payments/{pending['id']}")["status"] == "failed"
    again = pay(api, order, 2_000)
    assert again["status"] == "succeeded"
    seen = api.get(f"/v1/orders/{order['id']}").get_json()
    assert (seen["status"], seen["amount_paid"], seen["payments"]) == ("open", 2_000, [pending["id"], again["id"]])


def test_several_tenders_and_a_balance_payment_pay_one_order(stack):
    api = builders.api(stack.client)
    wallet = api.account(funded=1_000)
    order = make_order(api, 3_000)
    pay(api, order, 2_000)
    balance = api.post("/v1/payments", {"amount": 1_000, "currency": "USD", "reference": builders.unique("pay"),
                                        "payment_method": {"type": "balance", "account": wallet["id"]},
                                        "order": order["id"]})
    assert balance.status_code == 201 and balance.get_json()["status"] == "succeeded", balance.get_json()
    seen = api.get(f"/v1/orders/{order['id']}").get_json()
    assert (seen["status"], seen["amount_paid"], len(seen["payments"])) == ("paid", 3_000, 2)
    # A balance payment refused for want of funds leaves the order as it was.
    other = make_order(api, 5_000)
    short = api.post("/v1/payments", {"amount": 5_000, "currency": "USD", "reference": builders.unique("pay"),
                                      "payment_method": {"type": "balance", "account": wallet["id"]},
                                      "order": other["id"]})
    assert short.status_code == 402, short.get_json()
    assert pay(api, other, 5_000)["status"] == "succeeded"


def test_a_payment_without_an_order_is_as_before(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(2_000))
    assert payment.status_code == 201 and payment.get_json()["order"] is None
    made = payment.get_json()
    assert refund(api, made, 100)["order"] is None


def test_orders_refuse_what_they_cannot_take(client):
    api = builders.api(client)
    order = make_order(api, 1_000)
    for body, status, code, param in [
        (builders.payment_body(100, order="ord_doesnotexist"), 404, "resource_missing", "order"),
        (builders.payment_body(100, currency="EUR", order=order["id"]), 422, "currency_mismatch", "currency"),
        (builders.payment_body(1_001, order=order["id"]), 409, "order_amount_exceeded", "amount"),
        (builders.payment_body(100, order="not an id"), 400, "parameter_invalid", "order"),
    ]:
        response = api.post("/v1/payments", body)
        assert response.status_code == status, response.get_json()
        assert (response.get_json()["error"]["code"], response.get_json()["error"]["param"]) == (code, param)
    for body, status, param in [
        ({"currency": "USD", "reference": "x"}, 400, "amount"),
        ({**order_body(100), "amount": 0}, 400, "amount"),
        ({**order_body(100), "surprise": 1}, 400, "surprise"),
        ({**order_body(100), "currency": "XXX"}, 400, "currency"),
        ({**order_body(100), "reference": order["reference"]}, 422, "reference"),
    ]:
        response = api.post("/v1/orders", body)
        assert response.status_code == status, response.get_json()
        assert response.get_json()["error"]["param"] == param
    assert api.get("/v1/orders/ord_doesnotexist").status_code == 404
    assert builders.api(client, "Other").get(f"/v1/orders/{order['id']}").status_code == 404


def test_an_order_is_of_its_mode(client):
    test = builders.api(client)
    live = _live_key(test)
    order = make_order(test, 1_000)
    assert live.get(f"/v1/orders/{order['id']}").status_code == 404
    assert live.get("/v1/orders").get_json()["data"] == []
    named = live.post("/v1/payments", builders.payment_body(100, order=order["id"]))
    assert named.status_code == 404 and named.get_json()["error"]["param"] == "order"
    live_order = make_order(live, 1_000)
    assert live_order["livemode"] is True
    assert [o["id"] for o in test.get("/v1/orders").get_json()["data"]] == [order["id"]]


def test_orders_list_newest_first_with_its_filters(client):
    api = builders.api(client)
    made = [make_order(api, 100 + i, customer={"id": "cus_a" if i % 2 else "cus_b"}) for i in range(5)]
    listed = api.get("/v1/orders?limit=3").get_json()
    assert [o["id"] for o in listed["data"]] == [o["id"] for o in made[::-1][:3]] and listed["has_more"] is True
    rest = api.get(f"/v1/orders?starting_after={listed['data'][-1]['id']}").get_json()
    assert [o["id"] for o in rest["data"]] == [made[1]["id"], made[0]["id"]] and rest["has_more"] is False
    by_customer = api.get("/v1/orders?customer=cus_a").get_json()["data"]
    assert [o["id"] for o in by_customer] == [made[3]["id"], made[1]["id"]]
    assert [o["id"] for o in api.get(f"/v1/orders?reference={made[2]['reference']}").get_json()["data"]] == [
        made[2]["id"]]
    assert len(api.get("/v1/orders?status=open").get_json()["data"]) == 5
    assert api.get("/v1/orders?status=paid").get_json()["data"] == []
    for query, param in (("status=nope", "status"), ("channel=sandbox", "channel"), ("limit=0", "limit")):
        response = api.get(f"/v1/orders?{query}")
        assert response.status_code == 400 and response.get_json()["error"]["param"] == param, response.get_json()


def test_order_paid_is_signed_and_delivered_once(stack, receiver):
    stack.serve(webhook_config(stack.config))
    api, r = builders.api(stack.client), receiver()
    endpoint = create_endpoint(api, r.url, events=("order.paid",))
    order = make_order(api, 2_000)
    pay(api, order, 1_000)
    pump()
    assert r.requests == []  # subscribed to order.paid only, and the order is not paid yet
    pay(api, order, 1_000)
    pump()
    pump()
    assert len(r.requests) == 1
    payload = Webhook(endpoint["secret"]).verify(r.requests[0]["body"], r.requests[0]["headers"])
    assert payload["type"] == "order.paid" and list(json.loads(r.requests[0]["body"])) == [
        "id", "type", "created_at", "data"]
    data = payload["data"]
    assert (data["id"], data["status"], data["amount_paid"], len(data["payments"])) == (order["id"], "paid", 2_000, 2)
    refund(api, api.get(f"/v1/payments/{data['payments'][0]}").get_json(), 1_000)
    pump()
    assert len(r.requests) == 1  # a refund is no second order.paid


def test_an_authorization_holds_its_share_until_captured_or_canceled(stack):
    api = builders.api(stack.client)
    order = make_order(api, 2_000)
    held = pay(api, order, 2_000, capture_method="manual")
    assert held["status"] == "requires_capture"
    assert api.post("/v1/payments", builders.payment_body(100, order=order["id"])).status_code == 409
    canceled = api.post(f"/v1/payments/{held['id']}/cancel", {})
    assert canceled.status_code == 200 and canceled.get_json()["status"] == "canceled", canceled.get_json()
    again = pay(api, order, 2_000, capture_method="manual")
    captured = api.post(f"/v1/payments/{again['id']}/capture", {"amount": 1_500})
    assert captured.status_code == 200 and captured.get_json()["status"] == "succeeded", captured.get_json()
    seen = api.get(f"/v1/orders/{order['id']}").get_json()
    assert (seen["status"], seen["amount_paid"], seen["payments"]) == ("open", 1_500, [held["id"], again["id"]])
    assert pay(api, order, 500)["status"] == "succeeded"  # what the partial capture released is payable again
    assert api.get(f"/v1/orders/{order['id']}").get_json()["status"] == "paid"


def test_payments_and_refunds_filter_by_their_order(stack):
    api = builders.api(stack.client)
    order, other = make_order(api, 3_000), make_order(api, 1_000)
    declined, paid = pay(api, order, 1_951), pay(api, order, 2_000)
    elsewhere = pay(api, other, 1_000)
    api.post("/v1/payments", builders.payment_body(2_000))  # no order
    assert [p["id"] for p in api.get(f"/v1/payments?order={order['id']}").get_json()["data"]] == [
        paid["id"], declined["id"]]
    assert [p["id"] for p in api.get(f"/v1/payments?order={order['id']}&status=failed").get_json()["data"]] == [
        declined["id"]]
    back = refund(api, paid, 300)
    refund(api, elsewhere, 100)
    assert [r["id"] for r in api.get(f"/v1/refunds?order={order['id']}").get_json()["data"]] == [back["id"]]
    assert api.get("/v1/payments?order=ord_unknown").get_json()["data"] == []
    for path in ("/v1/payments?order=pay_x", "/v1/topups?order=ord_x"):
        response = api.get(path)
        assert response.status_code == 400 and response.get_json()["error"]["param"] == "order", path
