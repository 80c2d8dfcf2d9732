"""POST /v1/routing/simulate decides for a body of any operation kind, named by `kind` (contract §1);
`type`, the field's first name, is still taken."""
from __future__ import annotations

from app.services.rules_store import seed_default_rules
from tests import builders

DESTINATION = {"type": "bank_account", "country": "US", "last4": "6789"}


def test_a_withdrawal_is_simulated_under_the_withdrawal_rules(client):
    seed_default_rules()
    api = builders.api(client)
    body = {"kind": "withdrawal", "amount": 1_100_000, "currency": "USD", "destination": DESTINATION,
            "customer": {"id": "cus_1"}}
    decision = api.post("/v1/routing/simulate", body).get_json()
    assert "withdrawal-limits" in decision["matched_rules"], decision
    assert decision["outcome"] == "decline" and decision["decline_code"] == "limit_exceeded", decision
    small = api.post("/v1/routing/simulate", {**body, "amount": 5000}).get_json()
    assert small["outcome"] == "route" and small["channel"] == "sandbox" and small["fee"] == 25, small


def test_kind_and_its_earlier_name(client):
    seed_default_rules()
    api = builders.api(client)
    card = builders.payment_body(150_000)
    by_kind = api.post("/v1/routing/simulate", {**card, "kind": "payment"}).get_json()
    by_type = api.post("/v1/routing/simulate", {**card, "type": "payment"}).get_json()
    assert by_kind["matched_rules"] == by_type["matched_rules"] == ["big-usd-cards"]
    clash = api.post("/v1/routing/simulate", {**card, "kind": "payment", "type": "topup"})
    assert clash.status_code == 400 and clash.get_json()["error"]["param"] == "type"
    missing = api.post("/v1/routing/simulate", {"kind": "withdrawal", "amount": 100, "currency": "USD"})
    assert missing.status_code == 400 and missing.get_json()["error"]["param"] == "destination"
