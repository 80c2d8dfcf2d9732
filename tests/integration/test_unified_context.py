"""One request id from the API through rows, the channel call, the worker and the event."""
import logging

from sqlalchemy import select

from app import context
from app.adapters.db import unit_of_work
from app.adapters.models import Attempt, ChannelCallback, Event, JournalEntry, LedgerLine, Operation
from tests import builders


def test_request_id_reaches_rows_channel_and_event(stack):
    api = builders.api(stack.client)
    response = api.post("/v1/payments", builders.payment_body(2000), **{"X-Request-Id": "trace-pay-1"})
    assert response.status_code == 201 and response.headers["X-Request-Id"] == "trace-pay-1"
    payment_id = response.get_json()["id"]
    with unit_of_work() as session:
        assert session.get(Operation, payment_id).request_id == "trace-pay-1"
        assert {a.request_id for a in session.scalars(select(Attempt).where(Attempt.operation_id == payment_id))} \
            == {"trace-pay-1"}
        entries = list(session.scalars(select(JournalEntry).where(JournalEntry.source_id == payment_id)))
        assert entries and {e.request_id for e in entries} == {"trace-pay-1"}
        lines = session.scalars(select(LedgerLine.request_id).where(LedgerLine.entry_id == entries[0].id))
        assert set(lines) == {"trace-pay-1"}
        assert session.scalars(select(Event.request_id).where(Event.object_id == payment_id)).one() == "trace-pay-1"


def test_jobs_run_in_the_context_of_the_request_that_queued_them(stack, caplog):
    """The sandbox learns our request id only from the header of our channel call; it sends it back on
    its callback, which is stored with it, and the worker that applies the callback logs and records it."""
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(2052), **{"X-Request-Id": "trace-late-1"}).get_json()
    with caplog.at_level(logging.INFO, logger="payrouter.callbacks"):
        final = stack.settle(api, f"/v1/payments/{payment['id']}")
    assert final["status"] == "succeeded"
    with unit_of_work() as session:
        callback = session.scalars(select(ChannelCallback).where(ChannelCallback.reference == payment["id"])).one()
        assert callback.request_id == "trace-late-1"
        assert session.scalars(select(Event.request_id).where(Event.object_id == payment["id"])).one() \
            == "trace-late-1"
    applied = [r for r in caplog.records if payment["id"] in r.getMessage() and "applied" in r.getMessage()]
    assert applied and {r.request_id for r in applied} == {"trace-late-1"}
    assert {r.object_id for r in applied} == {payment["id"]}


def test_enqueue_carries_the_context_into_the_job(clean):
    from rq import Queue, SimpleWorker

    from app.adapters.redis_conn import get_redis

    queue = Queue("batch", connection=get_redis())
    with context.bound("trace-job-1", "mer_x", "obj_y"):
        job = context.enqueue(queue, "app.context.snapshot")
    SimpleWorker([queue], connection=get_redis()).work(burst=True)
    assert job.return_value() == {"request_id": "trace-job-1", "merchant_id": "mer_x", "object_id": "obj_y"}
    assert context.current_request_id() is None
