"""Every row of the sandbox table through the public API, over real HTTP, with a real worker."""
import pytest
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import Event, JournalEntry, LedgerLine
from tests import builders
from tests.support import wait_until


def ledger_kinds(object_id: str) -> list[str]:
    with unit_of_work() as session:
        return sorted(session.scalars(select(JournalEntry.kind).where(JournalEntry.source_id == object_id)))


def events_of(object_id: str) -> list[str]:
    with unit_of_work() as session:
        return sorted(session.scalars(select(Event.type).where(Event.object_id == object_id)))


def settlement_credit(object_id: str) -> int:
    with unit_of_work() as session:
        return sum(session.scalars(select(LedgerLine.amount).join(JournalEntry, JournalEntry.id == LedgerLine.entry_id)
                                   .where(JournalEntry.source_id == object_id, LedgerLine.amount > 0)))


@pytest.mark.parametrize("amount,first,final,attempts,failure", [
    (2000, "succeeded", "succeeded", [("sandbox", "succeeded", None)], None),
    (2049, "succeeded", "succeeded", [("sandbox", "succeeded", None)], None),
    (2099, "succeeded", "succeeded", [("sandbox", "succeeded", None)], None),
    (2051, "failed", "failed", [("sandbox", "failed", "card_declined")], "card_declined"),
    (2052, "processing", "succeeded", [("sandbox", "succeeded", None)], None),
    (2053, "processing", "failed", [("sandbox", "failed", "card_declined")], "card_declined"),
    (2054, "processing", "succeeded", [("sandbox", "succeeded", None)], None),
    (2055, "failed", "failed", [("sandbox", "failed", "channel_error")], "channel_error"),
    (2056, "processing", "succeeded", [("sandbox", "succeeded", None)], None),
])
def test_sandbox_row(stack, amount, first, final, attempts, failure):
    api = builders.api(stack.client)
    response = api.post("/v1/payments", builders.payment_body(amount))
    assert response.status_code == 201, response.get_json()
    payment = response.get_json()
    assert payment["status"] == first
    assert payment["routing"]["channel"] == "sandbox" and payment["routing"]["ruleset_version"] == 1
    fee = amount * 3 // 100 + (1 if amount * 3 % 100 >= 50 else 0)  # defaults: 3.0 %, half-up
    assert payment["fee"] == (0 if first == "failed" else fee)  # a fee is charged only on success
    payment = stack.settle(api, f"/v1/payments/{payment['id']}")
    assert payment["status"] == final and payment["fee"] == (fee if final == "succeeded" else 0)
    assert [(a["channel"], a["status"], a.get("error_code")) for a in payment["attempts"]] == attempts
    assert payment["failure_code"] == failure
    assert events_of(payment["id"]) == [f"payment.{final}"]
    if final == "succeeded":
        assert ledger_kinds(payment["id"]) == ["payment"]
        assert settlement_credit(payment["id"]) == amount  # merchant settlement + fee revenue
    else:
        assert ledger_kinds(payment["id"]) == []
        assert payment["failure_message"]


def test_56_three_callbacks_make_one_transition(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(3056)).get_json()
    import threading

    from app.adapters.models import ChannelCallback

    def sandbox_sending() -> bool:  # the sandbox's thread that posts an operation's event (three times here)
        return any(t.name.startswith("sandbox-callback-") and t.is_alive() for t in threading.enumerate())

    wait_until(lambda: not sandbox_sending(), timeout=10, what="the sandbox's three posts")
    stack.work()
    payment = api.get(f"/v1/payments/{payment['id']}").get_json()
    assert payment["status"] == "succeeded"
    assert events_of(payment["id"]) == ["payment.succeeded"]
    assert ledger_kinds(payment["id"]) == ["payment"]
    with unit_of_work() as session:
        rows = list(session.scalars(select(ChannelCallback).where(ChannelCallback.reference == payment["id"])))
    assert len(rows) == 1  # one event id: the duplicates were recognised at the door


def test_timeout_is_never_rerouted(stack):
    """100054 matches big-usd-cards (acq_alpha then acq_beta): the timeout on acq_alpha must not
    send the charge to acq_beta; the status query settles it."""
    from app.adapters.channels_runtime import channel

    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(100054)).get_json()
    assert payment["status"] == "processing"
    assert payment["routing"]["candidates"] == ["acq_alpha", "acq_beta"]
    assert [a["channel"] for a in payment["attempts"]] == ["acq_alpha"]
    payment = stack.settle(api, f"/v1/payments/{payment['id']}")
    assert payment["status"] == "succeeded" and [a["channel"] for a in payment["attempts"]] == ["acq_alpha"]
    never_sent = channel("acq_beta").query(payment["id"])
    assert never_sent.status == "failed" and never_sent.error_code == "not_found"


def test_fault_fails_over_to_the_next_candidate(stack, tmp_path):
    from tests.integration.conftest import channels_file_with
    from tests.live import free_port

    channels_file_with(stack.config.channels_file, stack.sandbox_url,
                       acq_alpha={"base_url": f"http://127.0.0.1:{free_port()}"})  # connection refused
    builders.store_channels()
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(100000)).get_json()
    assert payment["status"] == "succeeded"
    assert [(a["channel"], a["status"], a.get("error_code")) for a in payment["attempts"]] == [
        ("acq_alpha", "failed", "channel_error"), ("acq_beta", "succeeded", None)]
    assert payment["routing"]["channel"] == "acq_beta"
    assert payment["fee"] == 2930  # big-usd-cards: 2.9 % + 30


def test_decline_is_final_no_failover(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(100051)).get_json()
    assert payment["status"] == "failed" and [a["channel"] for a in payment["attempts"]] == ["acq_alpha"]
