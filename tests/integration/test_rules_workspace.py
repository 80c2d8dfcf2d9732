"""The rules workspace (issue #12 item 2): show, validate at the line, diff rule by rule, simulate draft
beside live, replay the last N operations, publish with a reason (and --yes when rules are dropped),
four-eyes approval, history with diffs, rollback with a reason; through the services and the CLI."""
import json
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import AuditLog, RulesetRequest
from app.domain.errors import InvalidRequest
from app.entrypoints.cli import main
from app.services import rules_publishing, rules_workspace
from app.services import rules_runtime as runtime
from app.services.rules_store import DEFAULT_RULES
from tests import builders

LIVE = DEFAULT_RULES.read_text()
# big-usd-cards: cheaper and to acq_beta first; test-emails-cheap dropped; a new decline for huge amounts
DRAFT = (LIVE.replace('route: [acq_alpha, acq_beta]\n      fee: {percent: "2.9", fixed: 30, min: 50}',
                      'route: [acq_beta, acq_alpha]\n      fee: {percent: "2.5", fixed: 30, min: 50}')
         .split("  - id: test-emails-cheap")[0]
         + "  - id: huge-declined\n    priority: 900\n    when: {fact: amount, gte: 2000000}\n"
           "    then: {decline: amount_too_large}\n\n"
         + "defaults: {route: [sandbox], fee: {percent: \"3.0\", fixed: 0}}\n")
CHEAPER = LIVE.replace('defaults: {route: [sandbox], fee: {percent: "3.0", fixed: 0}}',
                       'defaults: {route: [sandbox], fee: {percent: "1.0", fixed: 7}}')


def in_use_within_2_s(version: int) -> bool:
    """This process decides by ``version`` within 2 s (the contract's hot reload)."""
    deadline = time.monotonic() + 2
    while runtime.version_in_use() != version:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def cli(*args):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture
def draft_file(tmp_path):
    def write(text, name="draft.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def test_draft_changes_what_the_tests_expect():
    assert DRAFT != LIVE and "test-emails-cheap" not in DRAFT and '"2.5"' in DRAFT and "huge-declined" in DRAFT


def test_show_prints_the_live_set_or_a_version_as_yaml(live, draft_file):
    assert cli("rules", "publish", draft_file(CHEAPER), "--reason", "cheaper default fee")[0] == 0
    code, out = cli("rules", "show")
    assert code == 0 and out.startswith("# version 2 (live)") and 'percent: "1.0", fixed: 7' in out
    code, out = cli("rules", "show", "1")
    assert code == 0 and out.startswith("# version 1\n") and 'percent: "3.0", fixed: 0' in out
    assert "# PayRouter demo rules" in out  # the file as written, comments kept
    code, out = cli("rules", "show", "--merchant", "mer_x")
    assert code != 0 and "No such merchant" in out
    assert cli("rules", "show", "7")[0] != 0


def test_validate_gives_each_problem_its_line(live):
    bad = LIVE.replace("{fact: currency, eq: EUR}", "{fact: currency, eq: EURO}")
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if "EURO" in text)
    problems = rules_workspace.validate(bad)
    assert [(p["line"], p["rule_id"]) for p in problems] == [(line, "eur-split")]
    assert "EURO" in problems[0]["message"]
    assert rules_workspace.validate(LIVE) == []
    assert rules_workspace.validate("rules: [")[0]["line"] == 1


def test_diff_rule_by_rule_with_fields_before_and_after(live, draft_file):
    code, out = cli("rules", "diff", draft_file(DRAFT))
    assert code == 0, out
    assert "against live version 1" in out
    assert "+ huge-declined  (added)" in out
    assert "- test-emails-cheap  (removed)" in out
    assert '~ big-usd-cards\n    then.route: ["acq_alpha", "acq_beta"] → ["acq_beta", "acq_alpha"]\n' \
           '    then.fee.percent: "2.9" → "2.5"' in out
    assert "1 added, 1 removed, 1 changed" in out
    result = json.loads(cli("rules", "diff", draft_file(DRAFT), "--json")[1])
    assert [c["id"] for c in result["changed"]] == ["big-usd-cards"]
    assert "eur-split" in result["unchanged"]
    assert cli("rules", "diff", draft_file(CHEAPER))[1].splitlines()[-4:] == [
        "~ defaults", '    fee.percent: "3.0" → "1.0"', "    fee.fixed: 0 → 7",
        "0 added, 0 removed, 0 changed, defaults changed"]


def test_simulate_puts_draft_and_live_side_by_side_with_the_fee_formula(live):
    merchant_id, _ = builders.merchant()
    body = builders.payment_body(150000)
    result = rules_workspace.simulate(DRAFT, "payment", body, merchant_id)
    live_d, draft_d = result["live"], result["draft"]
    assert (live_d["channel"], live_d["fee"], draft_d["channel"], draft_d["fee"]) == ("acq_alpha", 4380,
                                                                                      "acq_beta", 3780)
    assert live_d["explain"]["fee_formula"] == "2.9% of 150000 + 30 = 4380 → 4380 USD"
    assert draft_d["explain"]["fee_from"] == "big-usd-cards" and draft_d["ruleset_version"] is None
    assert live_d["ruleset_version"] == 1 and result["differs"] and result["merchant"] == merchant_id
    assert live_d["limits"]["max_amount"] == {"max": 5000000, "rule": "big-usd-cards"}
    huge = rules_workspace.simulate(DRAFT, "withdrawal", {"amount": 3000000, "currency": "USD", "destination": {
        "type": "bank_account", "country": "US", "last4": "6789"}}, merchant_id)
    assert huge["draft"]["decline_code"] == "amount_too_large" and huge["draft"]["explain"]["declined_by"] \
        == "huge-declined"
    assert huge["live"]["decline_code"] == "limit_exceeded"  # withdrawal-limits' max_amount 1000000
    with pytest.raises(InvalidRequest):
        rules_workspace.simulate(DRAFT, "teleport", body)


def test_replay_counts_changed_channel_fee_and_decline_with_examples(live, draft_file):
    merchant_id, _ = builders.merchant()
    for i in range(3):
        builders.recorded_operation(merchant_id, 150000 + i, fee=4380, minutes_ago=10 + i)  # big USD cards
    builders.recorded_operation(merchant_id, 2500000, fee=72530, minutes_ago=5)  # declined by the draft
    builders.recorded_operation(merchant_id, 1000, channel="sandbox", fee=30, minutes_ago=4)  # unchanged
    builders.recorded_operation(merchant_id, 999, channel="sandbox", fee=30, minutes_ago=500)  # older than --last 5
    code, out = cli("rules", "replay", draft_file(DRAFT), "--last", "5", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert (result["replayed"], result["changed"], result["live_version"]) == (5, 4, 1)
    assert result["counts"] == {"channel": 3, "fee": 3, "decline": 1}
    example = result["examples"]["decline"][0]
    assert (example["amount"], example["live"]["outcome"], example["draft"]["decline_code"]) == (
        2500000, "route", "amount_too_large")
    assert result["examples"]["fee"][0]["live"]["fee"] != result["examples"]["fee"][0]["draft"]["fee"]
    code, out = cli("rules", "replay", draft_file(DRAFT), "--last", "5")
    assert "replayed 5 operation(s) against live version 1: 4 would change (channel 3, fee 3, decline 1)" in out
    assert "acq_alpha fee 4380 → acq_beta fee 3780" in out


def test_publish_asks_for_yes_when_it_drops_live_rules(live, draft_file):
    code, out = cli("rules", "publish", draft_file(DRAFT), "--reason", "new big-card pricing")
    assert code != 0 and "test-emails-cheap" in out and "--yes" in out
    assert runtime.version_in_use() == 1
    code, out = cli("rules", "publish", draft_file(DRAFT), "--reason", "new big-card pricing", "--yes")
    assert code == 0 and "published version 2" in out
    rows = json.loads(cli("rules", "history", "--json")[1])
    assert (rows[0]["version"], rows[0]["reason"]) == (2, "new big-card pricing")
    assert [r["id"] for r in rows[0]["diff"]["removed"]] == ["test-emails-cheap"]
    code, out = cli("rules", "history")
    assert "new big-card pricing  [1 added, 1 removed, 1 changed]" in out
    with unit_of_work() as session:
        audit = session.scalars(select(AuditLog).where(AuditLog.action == "rules.publish")).one()
    assert (audit.before, audit.after["version"], audit.after["dropped"], audit.reason) == (
        {"version": 1}, 2, ["test-emails-cheap"], "new big-card pricing")


def test_publish_and_rollback_require_a_reason(live, draft_file):
    code, out = cli("rules", "publish", draft_file(CHEAPER))
    assert code == 2 and "--reason" in out
    with pytest.raises(InvalidRequest, match="reason"):
        rules_publishing.publish(CHEAPER, "pm", "  ")
    assert cli("rules", "publish", draft_file(CHEAPER), "-m", "cheaper")[0] == 0  # the old -m still works
    assert in_use_within_2_s(2)
    code, out = cli("rules", "rollback", "1")
    assert code == 2 and "--reason" in out
    code, out = cli("rules", "rollback", "1", "--reason", "fee too low", "--actor", "pm@shop")
    assert code == 0 and in_use_within_2_s(1)
    code, out = cli("rules", "history", "--diff")
    assert "rollback" in out and "fee too low" in out and 'fee.percent: "1.0" → "3.0"' in out


def test_approval_needs_another_person(live):
    result = rules_publishing.publish(CHEAPER, "alice", "cheaper default fee", approval=True)
    assert result["status"] == "pending" and runtime.version_in_use() == 1
    pending = rules_publishing.pending()
    assert [(p["request"], p["author"]) for p in pending] == [(result["request"], "alice")]
    assert pending[0]["diff"]["defaults"]
    with pytest.raises(rules_publishing.SelfApproval):
        rules_publishing.approve(result["request"], "alice")
    assert rules_publishing.approve(result["request"], "bob")["version"] == 2
    assert in_use_within_2_s(2)
    row = rules_publishing.history()[0]
    assert (row["actor"], row["approved_by"], row["reason"]) == ("alice", "bob", "cheaper default fee")
    with pytest.raises(Exception, match="already approved"):
        rules_publishing.approve(result["request"], "carol")
    with unit_of_work() as session:
        assert session.get(RulesetRequest, result["request"]).decided_by == "bob"
        actions = session.scalars(select(AuditLog.action).where(AuditLog.action.like("rules.%"))
                                  .order_by(AuditLog.id)).all()
    assert actions == ["rules.request", "rules.approve"]  # (init's channels.import is audited as well)


def test_approval_setting_makes_the_cli_publish_wait(live, draft_file, clean):
    from app.config import scoped

    with scoped(clean.with_(rules_approval=True)):  # the CLI's process configuration, for this command
        code, out = cli("rules", "publish", draft_file(CHEAPER), "--reason", "cheaper")
    assert code == 0 and "awaits approval" in out and runtime.version_in_use() == 1
    request = rules_publishing.pending()[0]["request"]
    assert rules_publishing.reject(request, "bob", "not now")["status"] == "rejected"
    assert rules_publishing.pending() == []


WITHOUT_ALPHA = (LIVE.replace("route: [acq_alpha, acq_beta]", "route: [acq_beta]")
                 .replace("split: {acq_alpha: 70, acq_beta: 30}", "split: {acq_beta: 100}"))


def test_rollback_to_a_version_naming_a_removed_channel_is_refused_as_its_publish_is(live, draft_file, tmp_path):
    """Attack a14 S3: version 2 drops acq_alpha, `channels import --prune` then removes it (allowed:
    no live set routes to it). Rolling back to version 1, which routes to it, is refused with the
    message and exit publishing its text gets, nothing made live; the service refuses it too."""
    import yaml

    from app.config import get_config

    assert cli("rules", "publish", draft_file(WITHOUT_ALPHA), "--reason", "no alpha", "--yes")[0] == 0
    channels = yaml.safe_load(open(get_config().channels_file).read())
    channels["channels"] = [c for c in channels["channels"] if c["id"] != "acq_alpha"]
    (tmp_path / "no_alpha.yaml").write_text(yaml.safe_dump(channels))
    code, out = cli("channels", "import", str(tmp_path / "no_alpha.yaml"), "--prune", "--wait", "0")
    assert code == 0 and "acq_alpha" in out, out

    published = cli("rules", "publish", draft_file(LIVE, "v1.yaml"), "--reason", "v1 again", "--yes")
    rolled = cli("rules", "rollback", "1", "--reason", "undo")
    assert published[0] == rolled[0] == 1, (published, rolled)
    assert "unknown channel 'acq_alpha'" in published[1] and "unknown channel 'acq_alpha'" in rolled[1], rolled
    assert rolled[1].splitlines()[-1] == published[1].splitlines()[-1]  # "Error: N problem(s)"
    with pytest.raises(InvalidRequest, match="unknown channel 'acq_alpha'"):
        rules_publishing.rollback(1, "pm", "undo")
    assert runtime.version_in_use() == 2
    assert [r["version"] for r in rules_publishing.history()] == [2, 1]


def test_rollback_to_a_version_naming_a_channel_a_live_process_runs_without_exits_3(live, draft_file):
    """As `rules publish` does: rolled back (the channel is stored), but exit 3 with the same warning
    naming the channel and the process that drops it from routing."""
    assert cli("rules", "publish", draft_file(WITHOUT_ALPHA), "--reason", "no alpha", "--yes")[0] == 0
    with builders.process_running_without("acq_alpha", host="worker-7", pid=4343, role="worker"):
        code, out = cli("rules", "rollback", "1", "--reason", "alpha back")
        assert code == 3, out
        assert "version 1 is live" in out, out
        assert ("warning: acq_alpha is stored but not run by 1 live process(es) (worker worker-7 pid 4343)"
                in out), out
        assert in_use_within_2_s(1)
        code, out = cli("rules", "rollback", "2", "--reason", "no alpha again")  # names no such channel
        assert code == 0 and "warning" not in out, out
