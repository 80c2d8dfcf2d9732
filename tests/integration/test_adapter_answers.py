"""An adapter's answer the database cannot hold, after the PSP took the money, is never a 500 nor a
lost record (app.adapters.channel_answers): over-long text is cut to its column, ``raw`` made JSON,
and an answer the router cannot act on (a status outside STATUSES, not a ChannelResult) is an
unknown outcome, left processing until a status query settles it, never failed (a failover could
charge twice). A real adapter class, loaded by configuration as a plugin is: the sandbox's, with
its answers spoiled after the sandbox PSP charged, refunded or answered a status query."""
from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import replace

import pytest
import yaml
from sqlalchemy import select

from app.adapters import channels_runtime
from app.adapters.channel_answers import MARK, RAW_LIMIT
from app.adapters.db import unit_of_work
from app.adapters.models import Attempt, Operation
from app.services import callbacks
from channels.base import ChannelResult, ChannelTimeout
from channels.sandbox.adapter import SandboxChannel
from tests import builders

SPOIL: dict = {}  # verb → what the adapter makes of the sandbox's answer (the test sets it)


class SpoilsItsAnswers(SandboxChannel):
    def charge(self, req):
        return self._spoiled("charge", super().charge(req))

    def refund(self, req):
        return self._spoiled("refund", super().refund(req))

    def capture(self, req):
        return self._spoiled("capture", super().capture(req))

    def query(self, reference, channel_reference=None):
        return self._spoiled("query", super().query(reference, channel_reference))

    @staticmethod
    def _spoiled(verb: str, result: ChannelResult):
        spoil = SPOIL.get(verb)
        return result if spoil is None else spoil(result)


@pytest.fixture
def api(stack, monkeypatch):
    """Every channel of the stack run by ``SpoilsItsAnswers``, as ``payrouter channels import`` loads a plugin."""
    monkeypatch.setattr(f"{__name__}.SPOIL", {})
    path = stack.config.channels_file
    data = yaml.safe_load(path.read_text())
    for channel in data["channels"]:
        channel["adapter"] = f"{__name__}:SpoilsItsAnswers"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    channels_runtime.reset()
    builders.store_channels()
    assert type(channels_runtime.channel("sandbox")) is SpoilsItsAnswers
    return builders.api(stack.client)


def recorded(operation_id: str) -> Attempt:
    with unit_of_work() as session:
        [attempt] = session.scalars(select(Attempt).where(Attempt.operation_id == operation_id))
        session.expunge(attempt)
        return attempt


def spoil(verb: str, **fields) -> None:
    SPOIL[verb] = lambda result: replace(result, **fields)


CYCLE: dict = {}
CYCLE["itself"] = CYCLE
RAWS = {
    "bytes": {"body": b"\x00\xffok"},
    "datetime": {"at": dt.datetime(2026, 12, 6, 14, 0, tzinfo=dt.timezone.utc), "day": dt.date(2026, 12, 6)},
    "decimal": {"fee": decimal.Decimal("1.25")},
    "nan": {"rate": float("nan"), "cap": float("inf")},
    "cycle": {"loop": CYCLE},
    "huge": {"page": "x" * (RAW_LIMIT * 30)},
    "not a mapping": ["a", b"b", {1, 2}],
    "nul": {"text\x00": "a\ud800b"},
}


@pytest.mark.parametrize("kind", list(RAWS))
def test_a_raw_answer_json_cannot_hold_is_recorded_as_json(stack, api, kind):
    spoil("charge", raw=RAWS[kind])
    response = api.post("/v1/payments", builders.payment_body(1000))
    assert response.status_code == 201, response.get_json()
    paid = response.get_json()
    assert paid["status"] == "succeeded" and paid["attempts"][0]["status"] == "succeeded", paid
    raw = recorded(paid["id"]).raw
    assert isinstance(raw, dict) and len(str(raw)) < RAW_LIMIT + 200, raw
    expected = {
        "bytes": {"body": "\ufffd\ufffdok"},
        "datetime": {"at": "2026-12-06T14:00:00+00:00", "day": "2026-12-06"},
        "decimal": {"fee": "1.25"},
        "nan": {"rate": "nan", "cap": "inf"},
        "cycle": {"loop": {"itself": "<cycle>"}},
        "not a mapping": {"raw": ["a", "b", [1, 2]]},
        "nul": {"text\ufffd": "a\ufffdb"},
    }
    if kind == "huge":
        assert raw["truncated"] is True and raw["chars"] > RAW_LIMIT * 30 and len(raw["head"]) == RAW_LIMIT
    else:
        assert raw == expected[kind]


def test_over_long_text_of_a_decline_is_cut_to_its_column_with_a_mark(stack, api):
    spoil("charge", error_code="card_declined_" + "x" * 200, error_message="m" * 5000,
          channel_reference="sbx_" + "r" * 500)
    response = api.post("/v1/payments", builders.payment_body(1051))  # the sandbox declines it
    assert response.status_code == 201, response.get_json()
    declined = response.get_json()
    assert declined["status"] == "failed", declined
    code = declined["failure_code"]
    assert len(code) == 60 and code.startswith("card_declined_x") and code.endswith(MARK), code
    assert len(declined["failure_message"]) == 500 and declined["failure_message"].endswith(MARK)
    attempt = recorded(declined["id"])
    assert (attempt.status, attempt.error_code, len(attempt.error_message)) == ("failed", code, 500)
    assert len(attempt.channel_reference) == 200 and attempt.channel_reference.endswith(MARK)


def test_over_long_text_of_a_success_and_an_unusual_type_are_recorded(stack, api):
    spoil("charge", channel_reference=10 ** 250, error_message="note\x00" * 200, error_code=42)
    response = api.post("/v1/payments", builders.payment_body(1000))
    assert response.status_code == 201, response.get_json()
    paid = response.get_json()
    assert paid["status"] == "succeeded", paid
    attempt = recorded(paid["id"])
    assert attempt.channel_reference == str(10 ** 250)[:199] + MARK
    assert attempt.error_code == "42" and "\x00" not in attempt.error_message and len(attempt.error_message) == 500


@pytest.mark.parametrize("answer", [
    lambda result: replace(result, status="approved"),
    lambda result: replace(result, status=None),
    lambda result: None,
    lambda result: {"status": "succeeded"},
    lambda result: replace(result, amount_captured="all"),
])
def test_an_answer_the_router_cannot_act_on_is_an_unknown_outcome_a_status_query_settles(stack, api, answer, caplog):
    SPOIL["charge"] = answer
    response = api.post("/v1/payments", builders.payment_body(1000))  # the sandbox charged it
    assert response.status_code == 201, response.get_json()  # processing is 201 too
    payment = response.get_json()
    assert payment["status"] == "processing" and payment["failure_code"] is None, payment
    assert [(a["channel"], a["status"], a["error_code"]) for a in payment["attempts"]] == [
        ("sandbox", "unknown", "adapter_fault")], payment  # one attempt: never re-routed
    assert any("adapter fault: channel sandbox" in r.getMessage() for r in caplog.records)
    gave = isinstance(answer(ChannelResult("succeeded", "sbx_1")), ChannelResult)  # a reference: it is kept
    reference = recorded(payment["id"]).channel_reference
    assert reference.startswith("sbx_") if gave else reference is None, reference
    with unit_of_work() as session:
        assert session.get(Operation, payment["id"]).next_query_at is not None  # a status query is due

    assert callbacks.query_status(payment["id"]) == "succeeded"  # a well-behaved answer settles it
    settled = api.get(f"/v1/payments/{payment['id']}").get_json()
    assert settled["status"] == "succeeded" and settled["attempts"][0]["status"] == "succeeded", settled


def test_a_status_querys_answer_is_fitted_and_a_malformed_one_changes_nothing(stack, api):
    SPOIL["charge"] = lambda result: "approved"  # and no reference on record
    payment = api.post("/v1/payments", builders.payment_body(1051)).get_json()  # the sandbox declined it
    assert payment["status"] == "processing", payment

    SPOIL["query"] = lambda result: "declined"
    assert callbacks.query_status(payment["id"]) == "processing"  # asked again later
    spoil("query", error_code="card_declined" + "!" * 100, channel_reference="sbx_" + "r" * 300, raw={"b": b"x"})
    assert callbacks.query_status(payment["id"]) == "failed"
    failed = api.get(f"/v1/payments/{payment['id']}").get_json()
    assert len(failed["failure_code"]) == 60 and failed["failure_code"].endswith(MARK), failed
    with unit_of_work() as session:
        assert len(session.get(Operation, payment["id"]).channel_reference) == 200


def test_a_refunds_answer_is_fitted_too(stack, api):
    paid = api.post("/v1/payments", builders.payment_body(1000)).get_json()
    spoil("refund", error_message="e" * 1000, channel_reference="sbx_re_" + "r" * 300,
          raw={"at": dt.datetime(2026, 12, 6), "cycle": CYCLE})
    response = api.post("/v1/refunds", {"payment": paid["id"], "amount": 400, "reference": builders.unique("re")})
    assert response.status_code == 201, response.get_json()
    refund = response.get_json()
    assert refund["status"] == "succeeded", refund
    attempt = recorded(refund["id"])
    assert len(attempt.channel_reference) == 200 and len(attempt.error_message) == 500
    assert attempt.raw == {"at": "2026-12-06T00:00:00", "cycle": {"itself": "<cycle>"}}

    SPOIL["refund"] = lambda result: replace(result, status="refunded")
    response = api.post("/v1/refunds", {"payment": paid["id"], "amount": 100, "reference": builders.unique("re")})
    assert response.status_code == 201, response.get_json()  # processing is 201 too
    unknown = response.get_json()
    assert unknown["status"] == "processing" and unknown["attempts"][0]["status"] == "unknown", unknown
    assert callbacks.query_status(unknown["id"]) == "succeeded"
    assert api.get(f"/v1/payments/{paid['id']}").get_json()["amount_refunded"] == 500


def test_a_fault_raised_with_text_no_column_takes_is_recorded(stack, api):
    def times_out(result):
        raise ChannelTimeout("no answer\x00 " + "\ud800" * 1000)

    SPOIL["charge"] = times_out
    response = api.post("/v1/payments", builders.payment_body(1000))
    assert response.status_code == 201, response.get_json()
    payment = response.get_json()
    assert payment["status"] == "processing" and payment["attempts"][0]["error_code"] == "timeout", payment
    message = recorded(payment["id"]).error_message
    assert len(message) == 500 and "\x00" not in message and message.endswith(MARK)


def test_an_adapter_that_raises_after_the_psp_charged_leaves_an_unknown_outcome(stack, api, caplog):
    """A plugin's bug (any exception but a ChannelError) after the sandbox charged: 201 processing,
    the attempt unknown with adapter_fault and the traceback logged; a status query settles it."""
    def breaks(result):
        raise RuntimeError("the plugin tripped over the answer")

    SPOIL["charge"] = breaks
    response = api.post("/v1/payments", builders.payment_body(1000))
    assert response.status_code == 201, response.get_json()
    payment = response.get_json()
    assert payment["status"] == "processing" and len(payment["attempts"]) == 1, payment  # never re-routed
    assert (payment["attempts"][0]["status"], payment["attempts"][0]["error_code"]) == ("unknown", "adapter_fault")
    assert any("raised RuntimeError in charge" in r.getMessage() and r.exc_info for r in caplog.records)
    SPOIL.clear()
    assert callbacks.query_status(payment["id"]) == "succeeded"


def test_a_capture_answered_wrong_is_a_502_and_a_status_query_learns_the_capture(stack, api):
    authorized = api.post("/v1/payments", builders.payment_body(1000, capture_method="manual")).get_json()
    assert authorized["status"] == "requires_capture", authorized
    SPOIL["capture"] = lambda result: replace(result, status="captured")
    response = api.post(f"/v1/payments/{authorized['id']}/capture", {})
    assert response.status_code == 502 and response.get_json()["error"]["code"] == "adapter_fault", response.get_json()
    assert api.get(f"/v1/payments/{authorized['id']}").get_json()["status"] == "requires_capture"
    assert callbacks.query_status(authorized["id"]) == "succeeded"  # the sandbox did capture it
    assert api.get(f"/v1/payments/{authorized['id']}").get_json()["status"] == "succeeded"
