"""Journeys on the "Rules" page: a PM types a bad rule and sees the problem at its line, fixes it, sees
the diff and a replay, publishes with a reason, and the API decides by the new version within 2 s;
rolls back; with approval configured, a second person approves; every change is in the Audit log."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from app.services import rules_publishing, rules_workspace
from tests.builders import CARD, unique

CHEAPER = ('defaults: {route: [sandbox], fee: {percent: "3.0", fixed: 0}}',
           'defaults: {route: [sandbox], fee: {percent: "1.0", fixed: 7}}')


@pytest.fixture
def rules_back(live):
    """The live rule set before the test is live again after it (other journeys expect the defaults)."""
    before = rules_workspace.show()["version"]
    yield before
    if rules_workspace.show()["version"] != before:
        rules_publishing.rollback(before, "e2e", "restore after a rules journey")


def _decided_fee(api, body) -> tuple[int, int]:
    answer = api.post("/v1/routing/simulate", body).json()
    return answer["ruleset_version"], answer["fee"]


def _within_2_s(api, body, want: tuple[int, int], started: float) -> float:
    while True:
        got = _decided_fee(api, body)
        elapsed = time.monotonic() - started
        if got == want:
            return elapsed
        assert elapsed < 2.0, f"the API still decides by {got}, not {want}, after {elapsed:.2f} s"
        time.sleep(0.05)


def test_pm_fixes_a_bad_rule_checks_diff_and_replay_publishes_and_rolls_back(live, page, login, rules_back):
    api = live.api()
    body = {"amount": 1000, "currency": "USD", "payment_method": dict(CARD), "reference": unique("sim")}
    assert _decided_fee(api, body) == (rules_back, 30)
    paid = api.post("/v1/payments", {**body, "reference": unique("pay")})  # something for the replay
    assert paid.status_code in (200, 201, 202), paid.text
    me = login(page, "pm")
    page.get_by_role("link", name="Rules", exact=True).click()
    live_text = page.locator("#live-source").inner_text()
    assert CHEAPER[0] in live_text

    bad = live_text.replace(CHEAPER[0], 'defaults: {route: [sandbox], fee: {percent: 1.0, fixed: 7}}')
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if text.startswith("defaults:"))
    page.locator("#draft").fill(bad)
    page.get_by_role("button", name="Validate").click()
    problem = page.locator("#problems .problem").first
    expect(problem).to_contain_text(f"Line {line}:")
    expect(problem).to_contain_text("percent must be a decimal string")
    expect(page.locator(f"#draft-lines [data-line='{line}']")).to_have_class(re.compile("problem-line"))

    page.locator("#draft").fill(live_text.replace(*CHEAPER))
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#valid")).to_be_visible()
    page.get_by_role("button", name="Diff").click()
    defaults = page.locator("#diff [data-rule='defaults']")
    expect(defaults).to_contain_text('fee.percent: "3.0" → "1.0"')
    expect(defaults).to_contain_text("fee.fixed: 0 → 7")
    expect(page.locator("#diff .diff-summary")).to_have_text("0 added, 0 removed, 0 changed, defaults changed")
    page.locator("#last").fill("5")
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("#replay-summary")).to_contain_text(re.compile(r"fee [1-5], decline 0"))
    expect(page.locator("#replay .replay-example[data-change='fee']").first).to_contain_text("fee 0.30 USD")

    page.get_by_label("Reason", exact=True).fill("cheaper default fee for small merchants")
    clicked = time.monotonic()
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.locator("body")).to_contain_text(re.compile(r"Published version \d+: it is live"))
    new = int(re.search(r"Published version (\d+)", page.locator("body").inner_text()).group(1))
    assert new > rules_back
    elapsed = _within_2_s(api, body, (new, 17), clicked)
    print(f"API decided by version {new} {elapsed:.3f} s after Publish was clicked")
    row = page.locator(f"#history .history-row[data-version='{new}']").first
    expect(row.locator(".history-who")).to_have_text(me)
    expect(row.locator(".history-reason")).to_have_text("cheaper default fee for small merchants")
    expect(row).to_contain_text("defaults changed")

    back = page.locator(f"#history .history-row[data-version='{rules_back}']").first
    back.get_by_label(f"Reason to roll back to version {rules_back}").fill("fee back to 3%")
    clicked = time.monotonic()
    back.get_by_role("button", name="Roll back").click()
    expect(page.locator("body")).to_contain_text(f"Rolled back: version {rules_back} is live")
    _within_2_s(api, body, (rules_back, 30), clicked)
    expect(page.locator("#history .history-row").first.locator(".history-reason")).to_have_text("fee back to 3%")

    page.get_by_role("link", name="Audit log", exact=True).click()
    expect(page.locator("tr.audit-entry", has_text="rules.rollback").first).to_contain_text("fee back to 3%")
    expect(page.locator("tr.audit-entry", has_text="rules.publish").first).to_contain_text(
        "cheaper default fee for small merchants")


def test_publish_waits_for_a_second_person_when_approval_is_configured(live, page, login, browser, rules_back):
    live.serve(live.config.with_(rules_approval=True))
    api = live.api()
    body = {"amount": 1000, "currency": "USD", "payment_method": dict(CARD), "reference": unique("sim")}
    author = login(page, "pm")
    page.goto(live.admin_url + "/rules/")
    page.locator("#draft").fill(page.locator("#live-source").inner_text().replace(*CHEAPER))
    page.get_by_label("Reason", exact=True).fill("cheaper, four eyes")
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.locator("body")).to_contain_text("awaits approval by another pm or admin")
    pending = page.locator("#pending .pending-row").last
    expect(pending).to_contain_text(author)
    assert _decided_fee(api, body) == (rules_back, 30)  # not live yet
    pending.get_by_role("button", name="Approve").click()  # the author cannot approve
    expect(page.locator("body")).to_contain_text("another pm or admin must approve it")
    assert _decided_fee(api, body) == (rules_back, 30)

    other = browser.new_context()
    try:
        theirs = other.new_page()
        approver = login(theirs, "admin")
        theirs.goto(live.admin_url + "/rules/")
        clicked = time.monotonic()
        theirs.locator("#pending .pending-row").last.get_by_role("button", name="Approve").click()
        expect(theirs.locator("body")).to_contain_text(re.compile(r"approved and published as version \d+"))
        new = int(re.search(r"as version (\d+)", theirs.locator("body").inner_text()).group(1))
        _within_2_s(api, body, (new, 17), clicked)
        row = theirs.locator(f"#history .history-row[data-version='{new}']").first
        expect(row.locator(".history-who")).to_have_text(f"{author} (approved by {approver})")
    finally:
        other.close()
