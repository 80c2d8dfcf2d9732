"""Soft-decline retries (contract §3 ``retry``, §4 sandbox row 59), through the public API with the
sandbox over HTTP: a decline whose code a rule's ``retry.on`` names tries the next candidate, each try
an attempt of its own; a hard decline, or a code not listed, stays final."""
import datetime as dt
import json

from click.testing import CliRunner
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import Event, JournalEntry, LedgerLine
from app.entrypoints.cli import main
from app.services import rules_store
from tests import builders
from tests.support import wait_until

RETRYING = """
rules:
  - id: soft-retry
    priority: 100
    when: {all: [{fact: currency, eq: USD}, {fact: payment_method.type, eq: card}]}
    then:
      route: [acq_alpha, acq_beta, sandbox]
      retry: {on: [issuer_unavailable, invalid_token], max: %d}
defaults: {route: [sandbox], fee: {percent: "1.0", fixed: 0}}
"""


def publish(source: str, api) -> int:
    version = rules_store.publish_and_announce(source, "test", "retry rules")
    wait_until(lambda: api.post("/v1/routing/simulate", builders.payment_body(100)).get_json()["ruleset_version"]
               == version, what="the new rule set in use")
    return version


def reconcile(channel: str) -> int:
    """``payrouter reconcile`` of today's statement of ``channel``: it must be clean; the lines it matched."""
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    result = CliRunner().invoke(main, ["reconcile", "--channel", channel, "--date", today, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["matched"]


def attempts(payment: dict) -> list[tuple]:
    return [(a["channel"], a["status"], a.get("error_code")) for a in payment["attempts"]]


def events_of(object_id: str) -> list[str]:
    with unit_of_work() as session:
        return sorted(session.scalars(select(Event.type).where(Event.object_id == object_id)))


def ledger_lines(object_id: str) -> list[tuple[str, int]]:
    with unit_of_work() as session:
        return sorted(session.execute(select(LedgerLine.account_id, LedgerLine.amount)
                                      .join(JournalEntry, JournalEntry.id == LedgerLine.entry_id)
                                      .where(JournalEntry.source_id == object_id)).all())


def test_a_soft_decline_tries_the_next_candidate_up_to_max(stack):
    api = builders.api(stack.client)
    publish(RETRYING % 1, api)
    response = api.post("/v1/payments", builders.payment_body(2059))
    assert response.status_code == 201, response.get_json()
    payment = response.get_json()
    # Every sandbox channel declines …59; max 1: one extra attempt, and the third candidate is never called.
    assert attempts(payment) == [("acq_alpha", "failed", "issuer_unavailable"),
                                 ("acq_beta", "failed", "issuer_unavailable")]
    assert payment["status"] == "failed" and payment["failure_code"] == "issuer_unavailable"
    assert payment["fee"] == 0 and payment["routing"]["channel"] == "acq_beta"
    assert payment["routing"]["matched_rules"] == ["soft-retry"]
    assert events_of(payment["id"]) == ["payment.failed"] and ledger_lines(payment["id"]) == []
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["attempts"] == payment["attempts"]

    publish(RETRYING % 2, api)
    payment = api.post("/v1/payments", builders.payment_body(3059)).get_json()
    assert attempts(payment) == [("acq_alpha", "failed", "issuer_unavailable"),
                                 ("acq_beta", "failed", "issuer_unavailable"),
                                 ("sandbox", "failed", "issuer_unavailable")]
    assert payment["status"] == "failed" and payment["failure_code"] == "issuer_unavailable"
    # Each declined attempt is a failed line on its channel's statement, matched to that attempt.
    assert reconcile("acq_alpha") == reconcile("acq_beta") == 2 and reconcile("sandbox") == 1


def test_a_retried_decline_can_end_in_success_on_the_next_channel(stack):
    """A token the vault bound to acq_beta is refused invalid_token by acq_alpha; the rule's retry names
    that code, so acq_beta is tried and takes the payment: its ledger lines are on acq_beta's clearing."""
    api = builders.api(stack.client)
    publish(RETRYING % 1, api)
    token = builders.card_token(stack.sandbox_url, channel="acq_beta")["token"]
    body = builders.payment_body(2000, payment_method={**builders.CARD, "token": token})
    payment = api.post("/v1/payments", body).get_json()
    assert attempts(payment) == [("acq_alpha", "failed", "invalid_token"), ("acq_beta", "succeeded", None)]
    assert payment["status"] == "succeeded" and payment["failure_code"] is None and payment["fee"] == 20
    assert payment["routing"]["channel"] == "acq_beta"
    assert events_of(payment["id"]) == ["payment.succeeded"]
    lines = ledger_lines(payment["id"])
    assert sum(amount for _account, amount in lines) == 0 and len(lines) == 3
    # The refused token left nothing at acq_alpha; the payment is on acq_beta's statement.
    assert reconcile("acq_alpha") == 0 and reconcile("acq_beta") == 1


def test_hard_declines_and_unlisted_codes_stay_final(stack):
    api = builders.api(stack.client)
    publish(RETRYING % 3, api)
    hard = api.post("/v1/payments", builders.payment_body(2051)).get_json()  # card_declined: not in retry.on
    assert attempts(hard) == [("acq_alpha", "failed", "card_declined")]
    assert hard["status"] == "failed" and hard["failure_code"] == "card_declined"


def test_without_a_retry_rule_a_soft_decline_is_final(stack):
    api = builders.api(stack.client)
    # The demo rules route 100000+ USD cards to [acq_alpha, acq_beta] and name no retry.
    payment = api.post("/v1/payments", builders.payment_body(100_059)).get_json()
    assert attempts(payment) == [("acq_alpha", "failed", "issuer_unavailable")]
    assert payment["status"] == "failed" and payment["failure_code"] == "issuer_unavailable"
    assert "retry" not in api.post("/v1/routing/simulate", builders.payment_body(100_059)).get_json()


def test_simulate_shows_the_retry_the_payment_would_get(stack):
    api = builders.api(stack.client)
    version = publish(RETRYING % 2, api)
    decision = api.post("/v1/routing/simulate", builders.payment_body(2059)).get_json()
    assert decision["ruleset_version"] == version
    assert decision["retry"] == {"on": ["issuer_unavailable", "invalid_token"], "max": 2, "rule": "soft-retry"}
