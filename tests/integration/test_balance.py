"""The merchant's balance, its balance transactions and the settlement report equal the ledger's
sums after a mixed workload through the API and the sandbox (contract §1: balance, reports)."""
from __future__ import annotations

import csv
import io
from collections import defaultdict

from click.testing import CliRunner
from sqlalchemy import func, select

from app.adapters.db import unit_of_work
from app.adapters.models import Account, JournalEntry, LedgerLine
from app.entrypoints.cli import main
from app.services import ledger
from tests import builders

DEST = {"type": "bank_account", "country": "US", "last4": "6789"}


def ledger_sums(merchant_id: str, code: str, livemode: bool = False) -> dict[str, int]:
    """Per currency, the sum of the lines of the merchant's system account ``code`` in a mode."""
    with unit_of_work() as session:
        rows = session.execute(
            select(Account.currency, func.sum(LedgerLine.amount)).join(Account, Account.id == LedgerLine.account_id)
            .where(Account.merchant_id == merchant_id, Account.system_code == ledger.system_code(code, livemode))
            .group_by(Account.currency)).all()
    return {currency: int(total) for currency, total in rows}


def entry_positions(entry_ids: list[str]) -> dict[str, tuple]:
    """Each journal entry's place in a list: (created_at to the microsecond, id)."""
    with unit_of_work() as session:
        return {row.id: (row.created_at, row.id) for row in session.execute(
            select(JournalEntry.id, JournalEntry.created_at).where(JournalEntry.id.in_(entry_ids)))}


def all_pages(api, path: str, limit: int = 3) -> list[dict]:
    items, after = [], None
    while True:
        sep = "&" if "?" in path else "?"
        page = api.get(f"{path}{sep}limit={limit}" + (f"&starting_after={after}" if after else "")).get_json()
        items += page["data"]
        if not page["has_more"]:
            return items
        after = page["data"][-1]["id"]


def mixed_workload(stack, api) -> dict:
    """Payments (sync, async, failed), refunds, top-ups, withdrawals (one failed), a transfer and a
    payment from a balance, in two currencies; the final objects by kind."""
    done: dict[str, list] = defaultdict(list)

    def post(path, body, kind):
        response = api.post(path, body)
        assert response.status_code == 201, response.get_json()
        obj = response.get_json()
        if obj["status"] == "processing":
            obj = stack.settle(api, f"{path}/{obj['id']}")
        done[kind].append(obj)
        return obj

    paid = post("/v1/payments", builders.payment_body(2000), "payment")
    post("/v1/payments", builders.payment_body(2051), "payment")  # declined
    late = post("/v1/payments", builders.payment_body(2052), "payment")  # succeeds by callback
    post("/v1/payments", builders.payment_body(2053), "payment")  # fails by callback
    post("/v1/payments", builders.payment_body(3000, "EUR"), "payment")
    post("/v1/refunds", {"payment": paid["id"], "amount": 500, "reference": builders.unique("re")}, "refund")
    post("/v1/refunds", {"payment": late["id"], "reference": builders.unique("re")}, "refund")
    wallet, other = api.account(funded=10_000), api.account()
    post("/v1/topups", {"account": wallet["id"], "amount": 5000, "currency": "USD",
                        "payment_method": dict(builders.CARD), "reference": builders.unique("top")}, "topup")
    post("/v1/topups", {"account": wallet["id"], "amount": 5051, "currency": "USD",
                        "payment_method": dict(builders.CARD), "reference": builders.unique("top")}, "topup")
    for amount in (3000, 4053):  # the second payout is declined: its hold is released
        post("/v1/withdrawals", {"account": wallet["id"], "amount": amount, "currency": "USD", "destination": DEST,
                                 "reference": builders.unique("wd")}, "withdrawal")
    assert api.post("/v1/transfers", api.transfer_body(wallet["id"], other["id"], 700)).status_code == 201
    post("/v1/payments", builders.payment_body(1200, payment_method={"type": "balance", "account": wallet["id"]}),
         "payment")
    charged_back = post("/v1/payments", builders.payment_body(2058), "payment")  # the sandbox disputes it
    done["dispute"].append(stack.dispute_of(api, charged_back["id"]))
    statuses = sorted(obj["status"] for objs in done.values() for obj in objs)
    assert statuses.count("failed") == 4, done  # two payments, a top-up, a withdrawal
    return done


def test_balance_and_its_lines_equal_the_ledger_after_a_mixed_workload(stack):
    api = builders.api(stack.client)
    done = mixed_workload(stack, api)
    settlement = ledger_sums(api.merchant_id, ledger.MERCHANT_SETTLEMENT)
    fees = ledger_sums(api.merchant_id, ledger.FEE_REVENUE)
    assert set(settlement) == {"USD", "EUR"}

    shown = api.get("/v1/balance").get_json()
    assert shown["object"] == "balance" and shown["livemode"] is False
    assert {b["currency"]: b["amount"] for b in shown["available"]} == settlement
    assert {b["currency"]: b["amount"] for b in shown["pending"]} == {"EUR": 0, "USD": 0}

    txns = all_pages(api, "/v1/balance_transactions")
    net, fee = defaultdict(int), defaultdict(int)
    for txn in txns:
        assert txn["id"].startswith("txn_") and txn["object"] == "balance_transaction" and txn["livemode"] is False
        assert txn["amount"] == txn["net"] + txn["fee"]
        net[txn["currency"]] += txn["net"]
        fee[txn["currency"]] += txn["fee"]
    assert dict(net) == settlement and dict(fee) == fees

    # One line per settled movement touching the merchant: every succeeded payment and refund, every
    # top-up and withdrawal whose fee the merchant paid, the dispute (its debit); nothing for a
    # failure or the transfer.
    by_source = {txn["source"]: txn for txn in txns}
    settled = [obj for objs in done.values() for obj in objs
               if obj["object"] == "dispute" or (obj["status"] == "succeeded"
                                                 and (obj["object"] in ("payment", "refund") or obj["fee"]))]
    assert sorted(by_source) == sorted(obj["id"] for obj in settled) and len(txns) == len(settled)
    for obj in settled:
        txn = by_source[obj["id"]]
        fee = obj.get("fee", 0)  # a dispute charges no fee here
        assert (txn["type"], txn["currency"], txn["fee"]) == (obj["object"], obj["currency"], fee)
        moved = {"payment": obj["amount"], "refund": -obj["amount"], "dispute": -obj["amount"]}.get(obj["object"], 0)
        assert txn["amount"] == moved and txn["net"] == moved - fee
    assert api.get(f"/v1/balance_transactions/{txns[0]['id']}").get_json() == txns[0]

    # Newest first, ties by id; backwards from the oldest gives the same list.
    positions = entry_positions([t["journal_entry"] for t in txns])
    assert [positions[t["journal_entry"]] for t in txns] == sorted(positions.values(), reverse=True)
    back, before = [], txns[-1]["id"]
    while before:
        page = api.get(f"/v1/balance_transactions?limit=4&ending_before={before}").get_json()
        back = page["data"] + back
        before = page["data"][0]["id"] if page["has_more"] else None
    assert back == txns[:-1]


def test_filters_and_bad_queries(stack):
    api = builders.api(stack.client)
    done = mixed_workload(stack, api)
    txns = all_pages(api, "/v1/balance_transactions", limit=100)
    refunds = all_pages(api, "/v1/balance_transactions?type=refund")
    assert refunds == [t for t in txns if t["type"] == "refund"] and len(refunds) == 2
    eur = all_pages(api, "/v1/balance_transactions?currency=EUR")
    assert [t["currency"] for t in eur] == ["EUR"]
    paid = done["payment"][0]["id"]
    assert [t["source"] for t in all_pages(api, f"/v1/balance_transactions?source={paid}")] == [paid]
    assert all_pages(api, "/v1/balance_transactions?type=payment&currency=EUR") == eur
    # A cursor of another currency still marks a place in a filtered list.
    usd_after_eur = all_pages(api, f"/v1/balance_transactions?currency=USD&starting_after={eur[0]['id']}")
    positions = entry_positions([t["journal_entry"] for t in txns])
    assert usd_after_eur == [t for t in txns if t["currency"] == "USD" and
                             positions[t["journal_entry"]] < positions[eur[0]["journal_entry"]]]
    assert all_pages(api, "/v1/balance_transactions?created[gte]=2999-01-01T00:00:00Z") == []
    assert all_pages(api, "/v1/balance_transactions?created[lt]=0") == []
    assert all_pages(api, "/v1/balance_transactions?created[gte]=0") == txns

    for query, param, code in [("type=Pay!", "type", "parameter_invalid"),
                               ("currency=usd", "currency", "parameter_invalid"),
                               ("source=nope", "source", "parameter_invalid"),
                               ("created[gte]=yesterday", "created[gte]", "parameter_invalid"),
                               ("status=succeeded", "status", "parameter_unknown"),
                               ("limit=0", "limit", "parameter_invalid"),
                               ("starting_after=txn_unknown", "starting_after", "resource_missing"),
                               ("ending_before=pay_unknown", "ending_before", "resource_missing")]:
        response = api.get(f"/v1/balance_transactions?{query}")
        error = response.get_json()["error"]
        assert (response.status_code, error["param"], error["code"]) == (400, param, code), query
    assert api.get("/v1/balance?currency=USD").status_code == 400
    for missing in ("txn_unknown", "je_" + txns[0]["id"][4:], "nothing"):
        response = api.get(f"/v1/balance_transactions/{missing}")
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "resource_missing"


def test_each_mode_and_merchant_sees_its_own_balance(stack):
    test_api = builders.api(stack.client, "Both")
    live_api = builders.Api(stack.client, _live_key(test_api.merchant_id), test_api.merchant_id)
    paid = test_api.post("/v1/payments", builders.payment_body(2000)).get_json()
    wallet = live_api.account(funded=5000)
    live_paid = live_api.post("/v1/payments", builders.payment_body(
        1000, payment_method={"type": "balance", "account": wallet["id"]})).get_json()
    assert live_paid["status"] == "succeeded" and live_paid["livemode"] is True

    test_view, live_view = test_api.get("/v1/balance").get_json(), live_api.get("/v1/balance").get_json()
    assert test_view["available"] == [{"currency": "USD", "amount": 2000 - paid["fee"]}]
    assert live_view["livemode"] is True
    assert live_view["available"] == [{"currency": "USD", "amount": 1000 - live_paid["fee"]}]
    assert ledger_sums(test_api.merchant_id, ledger.MERCHANT_SETTLEMENT, livemode=True) == {
        "USD": 1000 - live_paid["fee"]}
    (test_txn,) = test_api.get("/v1/balance_transactions").get_json()["data"]
    (live_txn,) = live_api.get("/v1/balance_transactions").get_json()["data"]
    assert live_txn["livemode"] is True and live_txn["source"] == live_paid["id"]
    assert test_api.get(f"/v1/balance_transactions/{live_txn['id']}").status_code == 404
    assert live_api.get(f"/v1/balance_transactions/{test_txn['id']}").status_code == 404
    assert test_api.get(f"/v1/balance_transactions?starting_after={live_txn['id']}").status_code == 400

    stranger = builders.api(stack.client, "Stranger")
    assert stranger.get("/v1/balance").get_json()["available"] == []
    assert stranger.get("/v1/balance_transactions").get_json()["data"] == []
    assert stranger.get(f"/v1/balance_transactions/{test_txn['id']}").status_code == 404
    day = test_txn["created_at"][:10]
    assert stranger.get(f"/v1/reports/settlement?date={day}").get_data(as_text=True) == \
        "currency,channel,count,gross,fees,refunds,disputes,net\n"
    live_report = list(csv.DictReader(io.StringIO(live_api.get(f"/v1/reports/settlement?date={day}")
                                                   .get_data(as_text=True))))
    assert [(r["channel"], r["gross"], r["net"]) for r in live_report] == [
        ("balance", "1000", str(1000 - live_paid["fee"]))]


def _live_key(merchant_id: str) -> str:
    from app.services.merchants import issue_key

    with unit_of_work() as session:
        return issue_key(session, merchant_id, "live").secret


def test_settlement_report_totals_equal_the_ledger(stack):
    api = builders.api(stack.client)
    done = mixed_workload(stack, api)
    txns = all_pages(api, "/v1/balance_transactions", limit=100)
    days = sorted({t["created_at"][:10] for t in txns})  # one, unless the workload ran across midnight
    rows = []
    for day in days:
        response = api.get(f"/v1/reports/settlement?date={day}")
        assert response.status_code == 200 and response.mimetype == "text/csv"
        assert response.headers["Content-Disposition"] == f'attachment; filename="settlement-{day}.csv"'
        rows += list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert rows and list(rows[0]) == ["currency", "channel", "count", "gross", "fees", "refunds", "disputes", "net"]
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        numbers = {k: int(v) for k, v in row.items() if k not in ("currency", "channel")}
        assert numbers["net"] == numbers["gross"] - numbers["fees"] - numbers["refunds"] - numbers["disputes"]
        for name, value in numbers.items():
            totals[row["currency"]][name] += value
    assert {c: t["net"] for c, t in totals.items()} == ledger_sums(api.merchant_id, ledger.MERCHANT_SETTLEMENT)
    assert {c: t["fees"] for c, t in totals.items()} == ledger_sums(api.merchant_id, ledger.FEE_REVENUE)
    assert sum(t["count"] for t in totals.values()) == len(txns)
    assert totals["USD"]["refunds"] == -sum(t["amount"] for t in txns if t["type"] == "refund")
    assert [totals["USD"]["disputes"]] == [obj["amount"] for obj in done["dispute"]] == [2058]
    routed = {obj["routing"]["channel"] for objs in done.values() for obj in objs if obj["status"] == "succeeded"}
    assert {row["channel"] for row in rows} == routed - {None} | {"balance"}  # the last payment ran in the ledger

    # The operator's report over the CLI: the same rows, led by the merchant and its mode.
    runner = CliRunner()
    result = runner.invoke(main, ["report", "settlement", "--date", days[0], "--merchant", api.merchant_id,
                                  "--format", "csv"])
    assert result.exit_code == 0, result.output
    cli_rows = list(csv.DictReader(io.StringIO(result.output)))
    first_day = list(csv.DictReader(io.StringIO(api.get(f"/v1/reports/settlement?date={days[0]}")
                                                .get_data(as_text=True))))
    assert [{k: v for k, v in r.items() if k not in ("merchant", "mode")} for r in cli_rows] == first_day
    assert {(r["merchant"], r["mode"]) for r in cli_rows} == {(api.merchant_id, "test")}
    table = runner.invoke(main, ["report", "settlement", "--date", days[0], "--merchant", api.merchant_id])
    assert table.exit_code == 0 and table.output.split()[:10] == ["merchant", "mode", "currency", "channel", "count",
                                                                   "gross", "fees", "refunds", "disputes", "net"]
    everyone = runner.invoke(main, ["report", "settlement", "--date", days[0], "--format", "csv"])
    assert everyone.exit_code == 0 and everyone.output.count(api.merchant_id) == len(cli_rows)


def test_settlement_report_refuses_bad_input(stack):
    api = builders.api(stack.client)
    for query, code in [("", "parameter_missing"), ("date=2026-13-01", "parameter_invalid"),
                        ("date=20260101", "parameter_invalid"), ("date=2026-01-01&merchant=x", "parameter_unknown"),
                        ("date=9999-12-31", "parameter_invalid")]:
        response = api.get(f"/v1/reports/settlement?{query}")
        assert response.status_code == 400 and response.get_json()["error"]["code"] == code, query
    runner = CliRunner()
    bad = runner.invoke(main, ["report", "settlement", "--date", "yesterday"])
    assert bad.exit_code == 1 and "--date must be a day as YYYY-MM-DD" in bad.output
    last = runner.invoke(main, ["report", "settlement", "--date", "9999-12-31"])
    assert last.exit_code == 1 and "--date must be a day as YYYY-MM-DD" in last.output
    unknown = runner.invoke(main, ["report", "settlement", "--date", "2026-01-01", "--merchant", "mer_nope"])
    assert unknown.exit_code == 1 and "no such merchant mer_nope" in unknown.output


def test_an_entry_with_two_lines_on_one_account_is_one_transaction_on_every_page(client):
    """A posting may move the settlement account's available and pending balances in one entry
    (none does today): it is still one line of the list, and no page loses a place to it."""
    api = builders.api(client)
    entries = []
    with unit_of_work() as session:
        settlement, clearing = (ledger.system_account(session, api.merchant_id, code, "USD")
                                for code in (ledger.MERCHANT_SETTLEMENT, ledger.CHANNEL_CLEARING + ":sandbox"))
        for number in range(7):
            legs = [ledger.Leg(settlement, 100 + number), ledger.Leg(clearing, -100 - number)]
            if number % 2:
                legs += [ledger.Leg(settlement, 10, ledger.PENDING), ledger.Leg(clearing, -10)]
            entries.append(ledger.post(session, merchant_id=api.merchant_id, kind="payment", source_id=None,
                                       legs=legs))
    newest_first = [txn["journal_entry"] for txn in all_pages(api, "/v1/balance_transactions", limit=100)]
    assert sorted(newest_first) == sorted(entries) and len(newest_first) == 7
    for limit in (1, 2, 3):
        assert [t["journal_entry"] for t in all_pages(api, "/v1/balance_transactions", limit=limit)] == newest_first
    by_entry = {t["journal_entry"]: t for t in all_pages(api, "/v1/balance_transactions", limit=100)}
    assert [by_entry[e]["net"] for e in entries] == [100, 111, 102, 113, 104, 115, 106]
    shown = api.get("/v1/balance").get_json()
    assert shown["available"] == [{"currency": "USD", "amount": sum(range(100, 107))}]
    assert shown["pending"] == [{"currency": "USD", "amount": 30}]
