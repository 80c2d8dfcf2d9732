"""An operation's timeline, through the sandbox, a worker and a webhook receiver: the decision and
why, attempts, callbacks, ledger lines, events, webhook deliveries, in time order."""
from __future__ import annotations

import pytest

from app.domain.errors import NotFound
from app.services import search, timeline, webhook_admin
from app.services.search import Criteria
from tests import builders
from tests.webhook_support import create_endpoint, pump, webhook_config
from tests.webhook_support import transfer as make_transfer


def test_timeline_tells_the_whole_story(stack, receiver):
    stack.serve(webhook_config(stack.config))
    hooks = receiver()
    api = builders.api(stack.client)
    create_endpoint(api, hooks.url)
    body = builders.payment_body(2052)  # the sandbox: processing, then a callback settles it
    payment = api.post("/v1/payments", body).get_json()
    assert payment["status"] == "processing"
    payment = stack.settle(api, f"/v1/payments/{payment['id']}")
    assert payment["status"] == "succeeded"
    pump()

    story = timeline.timeline(payment["id"])
    decision = story["decision"]
    assert decision["chosen"] == "sandbox" and decision["ruleset_version"] == 1
    assert decision["fee"] == 62  # 3 % of 2052, half-up; written for people in major units:
    assert decision["fee_formula"] == "3.0% of 20.52 USD + 0.00 USD = 0.6156 USD → 0.62 USD"
    assert decision["fee_rule"] and decision["route_rule"]
    assert [(a["channel"], a["status"]) for a in story["attempts"]] == [("sandbox", "succeeded")]
    assert [c["outcome"] for c in story["callbacks"]] == ["applied"]
    assert sum(line["amount"] for line in story["ledger"]) == 0 and story["ledger"]
    assert [e["type"] for e in story["events"]] == ["payment.succeeded"]
    assert [(d["event_type"], d["status"]) for d in story["deliveries"]] == [("payment.succeeded", "succeeded")]
    ledger = [entry["summary"] for entry in story["entries"] if entry["type"] == "ledger"]
    shown = sorted(line.split(" on ")[0] for line in ledger)  # the clearing account pays the fee and the net
    assert shown == ["payment: +0.62 USD", "payment: +19.90 USD", "payment: -20.52 USD"], ledger
    kinds = [entry["type"] for entry in story["entries"]]
    assert kinds[0] == "decision" and {"attempt", "callback", "ledger", "event", "webhook"} <= set(kinds)
    assert [e["at"] for e in story["entries"]] == sorted(e["at"] for e in story["entries"])
    with pytest.raises(NotFound):
        timeline.timeline("pay_nothing")
    assert [row["id"] for row in search.search(Criteria(reference=body["reference"])).rows] == [payment["id"]]


def test_a_transfer_and_its_redelivery_on_the_timeline(wh_client, receiver):
    hooks = receiver()
    api = builders.api(wh_client)
    create_endpoint(api, hooks.url)
    moved, _ = make_transfer(api)
    pump()
    first = timeline.timeline(moved["id"])["deliveries"]
    webhook_admin.redeliver(first[0]["id"], "olga")
    pump()
    story = timeline.timeline(moved["id"])
    assert [(d["generation"], d["status"]) for d in story["deliveries"]] == [(0, "succeeded"), (1, "succeeded")]
    assert story["object"]["object"] == "transfer" and sum(line["amount"] for line in story["ledger"]) == 0
    assert [e["type"] for e in story["entries"]][0] == "transfer"
