"""The console writes amounts in major units with their currency's code (the ``money`` filter,
app.domain.money.format_money): 2052 USD minor units read "20.52 USD", not "2052 USD" that an
operator takes for dollars; JPY has no decimals, KWD three. The API keeps its integers."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from flask import render_template_string

from app.adapters.db import unit_of_work
from app.adapters.models import Operation, utcnow
from tests import builders
from tests.builders import CARD
from tests.integration.test_admin_data import add_operation
from tests.integration.test_admin_tx_pages import Console


@pytest.fixture
def seeded(clean):
    from app.entrypoints.bootstrap import init

    init()  # the default rules, version 1: 3.0 % fee by default


def _row(page: str, op_id: str) -> str:
    start = page.index(f'data-id="{op_id}"')
    return page[start:page.index("</tr>", start)]


def test_the_filter_is_registered_once_on_the_app(app):
    with app.test_request_context():
        shown = render_template_string("{{ 2052 | money('USD') }}|{{ 500 | money('JPY') }}|{{ -1234 | money('KWD') }}"
                                       "|{{ none | money('USD') }}")
    assert shown == "20.52 USD|500 JPY|-1.234 KWD|\u2014"


def test_the_transactions_list_shows_major_units(app):
    shop, _ = builders.merchant()
    at = utcnow() - timedelta(minutes=1)
    usd = add_operation(shop, at=at, amount=2052, fee=62, reference="money-usd")
    jpy = add_operation(shop, at=at, amount=500, fee=15, currency="JPY", reference="money-jpy")
    kwd = add_operation(shop, at=at, amount=12345, fee=370, currency="KWD", reference="money-kwd")
    page = Console(app, "viewer").text(f"/admin/transactions/?merchant={shop}")
    assert ">20.52 USD</td>" in _row(page, usd) and ">0.62 USD</td>" in _row(page, usd)
    assert ">500 JPY</td>" in _row(page, jpy) and ">15 JPY</td>" in _row(page, jpy)
    assert ">12.345 KWD</td>" in _row(page, kwd) and ">0.370 KWD</td>" in _row(page, kwd)
    assert "2052 USD" not in page


def test_an_operation_page_shows_its_amount_fee_and_formula_in_major_units(app, seeded):
    shop, _ = builders.merchant()
    routing = {"ruleset_version": 1, "matched_rules": [], "candidates": ["acq_alpha"], "dropped": [],
               "channel": "acq_alpha"}
    op = add_operation(shop, at=utcnow() - timedelta(minutes=1), amount=2052, fee=62, routing=routing)
    page = Console(app, "viewer").text(f"/admin/transactions/{op}")
    assert '<span id="operation-amount">20.52 USD</span>, fee <span id="operation-fee">0.62 USD</span>' in page
    fee = page[page.index('id="decision-fee"'):]
    fee = fee[:fee.index("</dd>")]
    assert ">0.62 USD" in fee  # 3.0 % of 20.52 USD is 0.6156 USD, half-up to 0.62 USD as the money type rounds
    assert "3.0% of 20.52 USD + 0.00 USD = 0.6156 USD → 0.62 USD" in fee
    assert "2052" not in fee and "61.56" not in fee
    with unit_of_work() as session:
        session.get(Operation, op).amount_refunded = 1000
    assert '<span id="operation-refunded">10.00 USD</span>' in Console(app, "viewer").text(f"/admin/transactions/{op}")


def test_a_rules_simulation_shows_the_fee_in_major_units(app, seeded):
    console = Console(app, "pm")
    from tests.integration.test_admin_rules_page import LIVE
    from tests.integration.test_admin_rules_page import _token as rules_token

    def simulate(amount: int, currency: str) -> str:
        token = rules_token(console.text("/admin/rules/"))
        body = json.dumps({"amount": amount, "currency": currency, "payment_method": CARD})
        answer = console.client.post("/admin/rules/try", data={"csrf_token": token, "action": "simulate",
                                                                 "source": LIVE, "kind": "payment", "body": body})
        assert answer.status_code == 200
        return answer.get_data(as_text=True)

    text = simulate(2052, "USD")
    assert '<dd class="col-8 decision-fee">0.62 USD</dd>' in text
    assert "3.0% of 20.52 USD + 0.00 USD = 0.6156 USD → 0.62 USD" in text
    text = simulate(500, "JPY")
    assert '<dd class="col-8 decision-fee">15 JPY</dd>' in text
    assert "3.0% of 500 JPY + 0 JPY = 15 JPY → 15 JPY" in text


def test_reconciliation_issues_and_runs_show_major_units(app):
    from app.adapters.models import ReconciliationRun, new_id
    from app.services import issues

    found = [{"issue": "amount_mismatch", "channel_reference": builders.unique("ch"),
              "ours": {"id": "pay_money", "status": "succeeded", "amount": 2052, "currency": "USD"},
              "theirs": {"operation": "pay_money", "status": "succeeded", "amount": 2050, "currency": "USD",
                         "fee": 60}}]
    with unit_of_work() as session:
        issues.record(session, "acq_alpha", found)
        session.add(ReconciliationRun(id=new_id("recon"), channel="acq_alpha", day="2026-01-02", mode="daily",
                                      statement_lines=3, matched=2, issues=[], issue_count=1, channel_fees=75,
                                      summary={"theirs": {"USD": {"lines": 2, "amount": 4102, "fee": 60},
                                                          "JPY": {"lines": 1, "amount": 500, "fee": 15}}}))
    page = Console(app, "viewer").text("/admin/reconciliation/?channel=acq_alpha")
    row = _row(page, found[0]["id"])
    assert "succeeded 20.52 USD" in row and "succeeded 20.50 USD, fee 0.60 USD" in row and "2052" not in row
    fees = page[page.index('class="text-right text-nowrap run-fees"'):]
    assert fees[:fees.index("</td>")].endswith("<div>15 JPY</div><div>0.60 USD</div>")
