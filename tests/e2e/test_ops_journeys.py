"""Journeys of ops: disable a channel on the "Switches" page and the API drops it with
``switched_off``; open a channel's circuit by hand on the "Channels" page and the API drops it with
``circuit_open``; each back again, in words, with the reason, and in the audit log."""
from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from tests.builders import payment_body

CHANNEL = "acq_alpha"


def dropped_within(api, reason: str | None, seconds: float = 2.0) -> float:
    """Seconds until a simulated payment shows CHANNEL dropped for ``reason`` (None: not dropped)."""
    started = time.monotonic()
    while True:
        decision = api.post("/v1/routing/simulate", payment_body(100_000)).json()
        why = {d["channel"]: d["reason"] for d in decision["dropped"]}.get(CHANNEL)
        if why == reason:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"{CHANNEL} dropped for {why!r}, wanted {reason!r}: {decision}"
        time.sleep(0.05)


def test_ops_disable_a_channel_and_the_api_drops_it(live, page, login):
    name = login(page, "ops")
    api = live.api()
    dropped_within(api, None)
    page.get_by_role("link", name="Switches", exact=True).click()
    row = page.locator(f"tr.switch-row[data-name='channel:{CHANNEL}']")
    expect(row.locator(".switch-words")).to_have_text(f"Channel {CHANNEL}: enabled")
    row.get_by_label(f"Reason for Channel {CHANNEL}").fill("acquirer outage")
    row.get_by_role("button", name="Disable").click()
    expect(row.locator(".switch-words")).to_have_text(re.compile(
        rf"^Channel {CHANNEL}: disabled since .+ UTC, by {name}, because acquirer outage$"))
    dropped_within(api, "switched_off")
    expect(page.locator("#switch-history li").first).to_contain_text(
        f"{name} disabled channel {CHANNEL}, because acquirer outage")

    row.get_by_label(f"Reason for Channel {CHANNEL}").fill("acquirer back")
    row.get_by_role("button", name="Enable").click()
    expect(row.locator(".switch-words")).to_contain_text(f"Channel {CHANNEL}: enabled since")
    dropped_within(api, None)

    page.get_by_role("link", name="Audit log", exact=True).click()
    expect(page.get_by_text("acquirer outage").first).to_be_visible()


def test_ops_open_a_circuit_by_hand_and_the_api_drops_it(live, page, login):
    from app.services import channels

    name = login(page, "ops")
    api = live.api()
    try:
        page.get_by_role("link", name="Channels", exact=True).click()
        row = page.locator(f"tr.channel-row[data-channel='{CHANNEL}']")
        expect(row.locator(".channel-circuit")).to_have_text("closed")
        row.get_by_label(f"Reason for {CHANNEL}").fill("acquirer says down")
        row.get_by_role("button", name="Open circuit").click()
        expect(row.locator(".channel-circuit")).to_have_text(re.compile(
            rf"^open by hand since .+ UTC, by {name}, because acquirer says down$"))
        dropped_within(api, "circuit_open")

        row.get_by_label(f"Reason for {CHANNEL}").fill("acquirer back")
        row.get_by_role("button", name="Close circuit").click()
        expect(row.locator(".channel-circuit")).to_have_text("closed")
        dropped_within(api, None)
    finally:
        channels.close_circuit(CHANNEL, "e2e", "cleanup")
