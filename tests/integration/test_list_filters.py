"""Lists (contract §1): every filter on every collection, alone and combined, with bad values refused;
keyset paging forwards and backwards; a page costs the same number of statements at any size."""
from __future__ import annotations

import contextlib
import threading
from datetime import datetime, timedelta, timezone
from itertools import product

import pytest
from sqlalchemy import event, insert

from app.adapters.db import get_engine, unit_of_work
from app.adapters.models import Attempt, Operation, new_id
from tests import builders

BASE = datetime(2026, 3, 1, 12, 0, 0)
STATUSES = ("succeeded", "failed", "processing")
CHANNELS = ("sandbox", "acq_alpha")
CUSTOMERS = ("cus_a", "cus_b", None)


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=timezone.utc).isoformat().replace("+00:00", "Z")


def _seed(merchant_id: str, other_merchant_id: str) -> dict[str, list[dict]]:
    """Operations of every kind with each status, channel and customer, some sharing a created_at (ties go by
    id), plus rows no list of this merchant in test mode may show (live mode, another merchant). Answers what
    each list must hold, newest first, as dicts of the filterable fields."""
    rows, attempts, expected = [], [], {"payment": [], "refund": [], "topup": [], "withdrawal": []}
    payments = []
    n = 0
    for status, channel, customer in product(STATUSES, CHANNELS, CUSTOMERS):
        n += 1
        created = BASE + timedelta(minutes=n // 2)  # pairs share a timestamp
        op_id = new_id("pay")
        row = dict(id=op_id, merchant_id=merchant_id, livemode=False, kind="payment", status=status, amount=100 + n,
                   currency="USD", reference=f"ref-p{n}", customer={"id": customer} if customer else None,
                   payment_method=dict(builders.CARD), routing={"channel": channel}, channel=channel,
                   created_at=created, updated_at=created, metadata_={})
        rows.append(row)
        payments.append(row)
        expected["payment"].append(row)
        attempts += [dict(id=new_id("att"), operation_id=op_id, seq=seq, channel=channel, status=status,
                          created_at=created, updated_at=created) for seq in (1, 2)]
    for n, (payment, status) in enumerate(zip(payments[:6], product(STATUSES, (0, 1)), strict=True)):
        created = BASE + timedelta(hours=1, minutes=n)
        row = dict(id=new_id("re"), merchant_id=merchant_id, livemode=False, kind="refund", status=status[0],
                   amount=10, currency="USD", reference=f"ref-r{n}", customer=payment["customer"],
                   payment_id=payments[n % 2]["id"], routing={}, channel=payment["channel"], created_at=created,
                   updated_at=created, metadata_={})
        rows.append(row)
        expected["refund"].append(row)
    for n, status in enumerate(STATUSES):
        created = BASE + timedelta(hours=2, minutes=n)
        for kind, prefix in (("topup", "top"), ("withdrawal", "wd")):
            row = dict(id=new_id(prefix), merchant_id=merchant_id, livemode=False, kind=kind, status=status,
                       amount=50, currency="USD", reference=f"ref-{prefix}{n}", customer={"id": "cus_a"},
                       routing={}, channel="sandbox", created_at=created, updated_at=created, metadata_={})
            rows.append(row)
            expected[kind].append(row)
    for merchant, live in ((merchant_id, True), (other_merchant_id, False)):  # never listed
        rows.append(dict(id=new_id("pay"), merchant_id=merchant, livemode=live, kind="payment", status="succeeded",
                         amount=1, currency="USD", reference=f"ref-x{live}", customer={"id": "cus_a"},
                         routing={}, channel="sandbox", created_at=BASE, updated_at=BASE, metadata_={}))
    with unit_of_work() as session:
        session.execute(insert(Operation), rows)
        session.execute(insert(Attempt), attempts)
    for kind in expected:
        expected[kind].sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
    return expected


def _field(row: dict, name: str):
    return {"customer": (row["customer"] or {}).get("id"), "payment": row.get("payment_id")}.get(name, row.get(name))


def _walk(api, path: str, params: dict, limit: int = 2, backwards: bool = False) -> list[str]:
    """Every id of a list, a page of ``limit`` at a time: forwards with starting_after, or from the
    oldest page back to the newest with ending_before (answered in the same newest-first order)."""
    ids: list[str] = []
    query = {**params, "limit": limit}
    while True:
        response = api.client.get(path, query_string=query, headers=api.headers())
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        page = [obj["id"] for obj in body["data"]]
        assert len(page) <= limit
        ids = page + ids if backwards else ids + page
        if not body["has_more"]:
            return ids
        query = {**params, "limit": limit, ("ending_before" if backwards else "starting_after"):
                 page[0] if backwards else page[-1]}


@pytest.fixture
def seeded(client):
    api = builders.api(client)
    other, _ = builders.merchant("Other")
    return api, _seed(api.merchant_id, other)


FILTERS = {"payment": ("status", "customer", "reference", "channel"),
           "refund": ("status", "customer", "reference", "channel", "payment"),
           "topup": ("status", "customer", "reference", "channel"),
           "withdrawal": ("status", "customer", "reference", "channel")}
COLLECTIONS = {"payment": "/v1/payments", "refund": "/v1/refunds", "topup": "/v1/topups",
               "withdrawal": "/v1/withdrawals"}


def _values(rows: list[dict], name: str) -> list:
    return sorted({_field(r, name) for r in rows if _field(r, name) is not None}) + ["no-such-value"] * (
        name in ("customer", "reference", "channel"))


def test_every_filter_of_every_operation_list_alone(seeded):
    api, expected = seeded
    for kind, names in FILTERS.items():
        rows = expected[kind]
        assert _walk(api, COLLECTIONS[kind], {}) == [r["id"] for r in rows]
        for name in names:
            for value in _values(rows, name):
                want = [r["id"] for r in rows if _field(r, name) == value]
                assert _walk(api, COLLECTIONS[kind], {name: value}) == want, (kind, name, value)


def test_filters_combined_and_with_a_time_range(seeded):
    api, expected = seeded
    rows = expected["payment"]
    start, end = BASE + timedelta(minutes=2), BASE + timedelta(minutes=7)
    for status, channel, customer in product(STATUSES, CHANNELS, ("cus_a", "cus_b")):
        want = [r["id"] for r in rows if r["status"] == status and r["channel"] == channel
                and _field(r, "customer") == customer and start <= r["created_at"] < end]
        params = {"status": status, "channel": channel, "customer": customer,
                  "created[gte]": _iso(start), "created[lt]": str(int(end.replace(tzinfo=timezone.utc).timestamp()))}
        assert _walk(api, "/v1/payments", params, limit=1) == want, params
    within = [r["id"] for r in rows if start <= r["created_at"] < end]
    assert len(within) >= 8
    # RFC 3339 with an offset, and Unix seconds, name the same instants
    plus_two = (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    assert _walk(api, "/v1/payments", {"created[gte]": plus_two, "created[lt]": _iso(end)}) == within
    refunds = expected["refund"]
    payment = refunds[0]["payment_id"]
    assert _walk(api, "/v1/refunds", {"payment": payment, "status": "failed"}) == [
        r["id"] for r in refunds if r["payment_id"] == payment and r["status"] == "failed"]


def test_backward_paging_reads_the_same_list_as_forward(seeded):
    api, expected = seeded
    for params in ({}, {"status": "failed"}, {"channel": "acq_alpha", "customer": "cus_b"}):
        forward = _walk(api, "/v1/payments", params, limit=3)
        assert forward == [r["id"] for r in expected["payment"] if all(_field(r, k) == v for k, v in params.items())]
        # from the oldest object, ending_before pages back towards the newest
        oldest = forward[-1]
        back = _walk(api, "/v1/payments", {**params, "ending_before": oldest}, limit=3, backwards=True)
        assert back == forward[:-1], params
    # the page just before an object, newest first, with has_more saying newer ones remain
    ids = [r["id"] for r in expected["payment"]]
    body = api.get(f"/v1/payments?limit=2&ending_before={ids[5]}").get_json()
    assert [o["id"] for o in body["data"]] == ids[3:5] and body["has_more"] is True
    body = api.get(f"/v1/payments?limit=5&ending_before={ids[2]}").get_json()
    assert [o["id"] for o in body["data"]] == ids[:2] and body["has_more"] is False


def test_a_listed_payment_shows_its_attempts(seeded):
    api, expected = seeded
    data = api.get("/v1/payments?limit=100").get_json()["data"]
    assert len(data) == len(expected["payment"])
    for obj, row in zip(data, expected["payment"], strict=True):
        assert obj["attempts"] == [{"channel": row["channel"], "status": row["status"]}] * 2


def test_accounts_transfers_and_events_filters(client):
    api = builders.api(client)
    a = api.account(customer={"id": "cus_one"}, reference="acct-one", funded=500)
    b = api.account(customer={"id": "cus_two"})
    c = api.account(customer={"id": "cus_one"})
    ids = lambda r: [o["id"] for o in r.get_json()["data"]]  # noqa: E731
    assert ids(api.get("/v1/accounts?customer=cus_one")) == [c["id"], a["id"]]
    assert ids(api.get("/v1/accounts?customer=cus_two")) == [b["id"]]
    assert ids(api.get("/v1/accounts?reference=acct-one")) == [a["id"]]
    assert ids(api.get("/v1/accounts?reference=acct-one&customer=cus_two")) == []
    first = api.post("/v1/transfers", api.transfer_body(a["id"], b["id"], 100)).get_json()
    second = api.post("/v1/transfers", api.transfer_body(a["id"], c["id"], 100)).get_json()
    assert ids(api.get("/v1/transfers?status=succeeded")) == [second["id"], first["id"]]
    assert ids(api.get(f"/v1/transfers?reference={first['reference']}")) == [first["id"]]
    assert ids(api.get(f"/v1/transfers?ending_before={first['id']}")) == [second["id"]]
    future = int(datetime.now(timezone.utc).timestamp()) + 3600
    assert ids(api.get(f"/v1/transfers?created[gte]={future}")) == []
    assert ids(api.get(f"/v1/transfers?created[lt]={future}")) == [second["id"], first["id"]]
    events = ids(api.get("/v1/events?limit=100"))
    assert events and ids(api.get(f"/v1/events?limit=100&created[gte]={future}")) == []
    assert ids(api.get(f"/v1/events?limit=100&created[lt]={future}")) == events
    entries = ids(api.get(f"/v1/accounts/{a['id']}/entries?limit=100"))
    assert len(entries) == 3
    assert ids(api.get(f"/v1/accounts/{a['id']}/entries?ending_before={entries[-1]}")) == entries[:-1]


@pytest.mark.parametrize("path,query,param,code", [
    ("/v1/payments", "payment=pay_x", "payment", "parameter_unknown"),  # refunds only
    ("/v1/accounts", "status=succeeded", "status", "parameter_unknown"),
    ("/v1/transfers", "channel=sandbox", "channel", "parameter_unknown"),
    ("/v1/events", "customer=cus_a", "customer", "parameter_unknown"),
    ("/v1/webhook_endpoints", "reference=x", "reference", "parameter_unknown"),
    ("/v1/payments", "created=1700000000", "created", "parameter_unknown"),
    ("/v1/payments", "created[gt]=1700000000", "created[gt]", "parameter_unknown"),
    ("/v1/payments", "Status=failed", "Status", "parameter_unknown"),
    ("/v1/payments", "status=done", "status", "parameter_invalid"),
    ("/v1/payments", "status=", "status", "parameter_invalid"),
    ("/v1/refunds", "status=requires_capture", "status", "parameter_invalid"),  # payments only
    ("/v1/transfers", "status=failed", "status", "parameter_invalid"),
    ("/v1/refunds", "payment=re_123", "payment", "parameter_invalid"),
    ("/v1/refunds", "payment=pay_", "payment", "parameter_invalid"),
    ("/v1/payments", "channel=a%20b", "channel", "parameter_invalid"),
    ("/v1/payments", "customer=", "customer", "parameter_invalid"),
    ("/v1/payments", "reference=" + "r" * 201, "reference", "parameter_invalid"),
    ("/v1/payments", "created[gte]=yesterday", "created[gte]", "parameter_invalid"),
    ("/v1/payments", "created[gte]=2026-02-30T00:00:00Z", "created[gte]", "parameter_invalid"),
    ("/v1/payments", "created[lt]=2026-03-01T00:00:00", "created[lt]", "parameter_invalid"),  # no offset
    ("/v1/payments", "created[lt]=2026-03-01", "created[lt]", "parameter_invalid"),
    ("/v1/payments", "created[lt]=-5", "created[lt]", "parameter_invalid"),
    ("/v1/payments", "created[lt]=99999999999999999999", "created[lt]", "parameter_invalid"),
    ("/v1/payments", "created[gte]=1.5", "created[gte]", "parameter_invalid"),
    ("/v1/payments", "ending_before=not-an-id", "ending_before", "parameter_invalid"),
    ("/v1/payments", "ending_before=pay_nosuch", "ending_before", "resource_missing"),
    ("/v1/payments", "starting_after=pay_a&ending_before=pay_b", "ending_before", "parameter_invalid"),
    # one value each: a repeated one is refused, never read as its first value with the rest dropped
    ("/v1/payments", "status=succeeded&status=failed", "status", "parameter_invalid"),
    ("/v1/payments", "limit=10&limit=20", "limit", "parameter_invalid"),
    ("/v1/refunds", "payment=pay_a&payment=pay_b", "payment", "parameter_invalid"),
    ("/v1/balance_transactions", "type=payment&type=refund", "type", "parameter_invalid"),
])
def test_bad_list_queries_are_400_naming_the_parameter(client, path, query, param, code):
    api = builders.api(client)
    response = api.get(f"{path}?{query}")
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param), error
    assert param in error["message"]


@contextlib.contextmanager
def _statements():
    seen: list[str] = []
    me = threading.get_ident()

    def count(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() == me:
            seen.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_page_is_a_constant_number_of_statements(seeded):
    api, expected = seeded
    api.get("/v1/payments")  # the key is now cached: what follows is the list alone
    counts = {}
    for limit in (1, 10, 18):
        for cursor in ("", f"&starting_after={expected['payment'][0]['id']}"):
            with _statements() as seen:
                response = api.get(f"/v1/payments?limit={limit}{cursor}")
            assert response.status_code == 200
            assert len(response.get_json()["data"]) == min(limit, len(expected["payment"]) - bool(cursor))
            counts[(limit, bool(cursor))] = [s for s in seen if s.lstrip().upper().startswith("SELECT")
                                             and "FROM api_keys" not in s]  # the key, read again every 50 ms
    # the page, then its attempts in one statement; a cursor adds the cursor's row
    assert {key: len(selects) for key, selects in counts.items()} == {
        (limit, cursor): 2 + cursor for limit in (1, 10, 18) for cursor in (False, True)}, counts


def test_a_refund_listed_by_its_payment_through_the_api(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    assert payment["status"] == "succeeded", payment
    refund = api.post("/v1/refunds", {"payment": payment["id"], "amount": 500,
                                      "reference": builders.unique("re")}).get_json()
    listed = api.get(f"/v1/refunds?payment={payment['id']}").get_json()["data"]
    assert [r["id"] for r in listed] == [refund["id"]]
    mine = api.get(f"/v1/payments?customer={payment['customer']['id']}&channel={payment['routing']['channel']}"
                   f"&status=succeeded").get_json()["data"]
    assert [p["id"] for p in mine] == [payment["id"]] and mine[0]["attempts"] == payment["attempts"]


def test_list_filters_are_in_the_document(client):
    doc = client.get("/openapi.json").get_json()
    names = lambda path: {p["name"] for p in doc["paths"][path]["get"]["parameters"]}  # noqa: E731
    common = {"limit", "starting_after", "ending_before", "created[gte]", "created[lt]"}
    assert names("/v1/refunds") >= common | {"status", "customer", "reference", "channel", "payment"}
    assert names("/v1/payments") >= common | {"status", "customer", "reference", "channel"}
    assert "payment" not in names("/v1/payments")
    assert names("/v1/accounts") >= common | {"customer", "reference"}
    assert names("/v1/transfers") >= common | {"status", "reference"}


def test_payments_and_refunds_by_order_combined_with_status(stack):
    api = builders.api(stack.client)
    order = api.post("/v1/orders", {"amount": 5000, "currency": "USD", "reference": builders.unique("ord")}).get_json()
    failed = api.post("/v1/payments", builders.payment_body(2051, order=order["id"])).get_json()
    paid = api.post("/v1/payments", builders.payment_body(2000, order=order["id"])).get_json()
    other = api.post("/v1/payments", builders.payment_body(2000)).get_json()
    assert (failed["status"], paid["status"], other["status"]) == ("failed", "succeeded", "succeeded")
    refund = api.post("/v1/refunds", {"payment": paid["id"], "amount": 300, "reference": builders.unique("re")})
    assert refund.status_code == 201, refund.get_json()
    ids = lambda path: [o["id"] for o in api.get(path).get_json()["data"]]  # noqa: E731
    assert ids(f"/v1/payments?order={order['id']}") == [paid["id"], failed["id"]]
    assert ids(f"/v1/payments?order={order['id']}&status=failed") == [failed["id"]]
    assert ids(f"/v1/payments?order={order['id']}&status=succeeded&limit=1") == [paid["id"]]
    assert ids(f"/v1/payments?order={order['id']}&ending_before={failed['id']}") == [paid["id"]]
    assert ids(f"/v1/refunds?order={order['id']}&payment={paid['id']}") == [refund.get_json()["id"]]
    assert ids(f"/v1/refunds?order={order['id']}&payment={other['id']}") == []
    for path, param, code in ((f"/v1/payments?order={paid['id']}", "order", "parameter_invalid"),
                              ("/v1/topups?order=ord_abc", "order", "parameter_unknown")):
        error = api.get(path).get_json()["error"]
        assert (error["param"], error["code"]) == (param, code), error
