"""Status queries keep moving when some operations' channel is not run by this process (attack a14
S4): such a query is put off with backoff (logged, counted), never left due for ever; the sweep takes
the longest due first, of the channels this process runs, so a few stuck operations never starve the
queries of every other channel."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from rq import Queue, SimpleWorker

from app.adapters import jobs, metrics
from app.adapters.db import unit_of_work
from app.adapters.models import Operation, utcnow
from app.adapters.redis_conn import get_redis
from app.services import callbacks
from tests import builders
from tests.integration.conftest import run_without


def op(op_id: str) -> Operation:
    with unit_of_work() as session:
        found = session.get(Operation, op_id)
        session.expunge(found)
        return found


def work_once(batch: int) -> dict:
    queued = callbacks.sweep(batch=batch)
    SimpleWorker([Queue(jobs.CORE, connection=get_redis())], connection=get_redis()).work(burst=True)
    for key in get_redis().scan_iter("payrouter:sweep:query-*"):
        get_redis().delete(key)  # the leases lapse (SWEEP_LEASE_SECONDS) between real sweeps
    return queued


def test_operations_of_a_channel_not_run_here_never_starve_the_other_channels_queries(stack, tmp_path):
    api = builders.api(stack.client)
    stuck = [api.post("/v1/payments", builders.payment_body(100054)).get_json() for _ in range(3)]
    assert all(p["status"] == "processing" and p["attempts"][0]["channel"] == "acq_alpha" for p in stuck), stuck
    run_without(stack, tmp_path, "acq_alpha")
    other = api.post("/v1/payments", builders.payment_body(2054)).get_json()  # the sandbox: a query settles it
    assert other["status"] == "processing" and other["attempts"][0]["channel"] == "sandbox"
    time.sleep(1.2)  # every one of them due (status_query_delays 1, 1, 2)
    assert all(op(p["id"]).next_query_at <= utcnow() for p in [*stuck, other])

    for _ in range(3):  # a batch of 3: exactly as many as the stuck operations
        work_once(batch=3)
        if op(other["id"]).status == "succeeded":
            break
    assert op(other["id"]).status == "succeeded"
    assert [(op(p["id"]).status, op(p["id"]).query_count) for p in stuck] == [("processing", 0)] * 3


def test_a_query_this_process_cannot_ask_is_put_off_with_backoff_logged_and_counted(stack, tmp_path, caplog):
    """A worker that does not run the operation's channel takes its query (queued by a process that
    does, or by reconciliation): nothing asked, not counted as a query, asked again later (the
    older the operation, the later: at most the schedule's last delay); the job does not fail."""
    api = builders.api(stack.client)
    stuck = api.post("/v1/payments", builders.payment_body(100054)).get_json()
    assert stuck["attempts"][0]["channel"] == "acq_alpha"
    alpha_back = run_without(stack, tmp_path, "acq_alpha")
    before = metrics.QUERIES_PUT_OFF.labels("acq_alpha")._value.get()
    with caplog.at_level(logging.WARNING, logger="payrouter"):
        assert callbacks.query_status(stuck["id"]) == "put_off"
    after = op(stuck["id"])
    assert after.status == "processing" and after.query_count == 0
    assert after.next_query_at >= utcnow() + timedelta(seconds=0.5)  # the schedule's first delay: 1 s
    assert metrics.QUERIES_PUT_OFF.labels("acq_alpha")._value.get() == before + 1
    assert any("not run by this process" in r.getMessage() and stuck["id"] in r.getMessage() for r in caplog.records)

    with unit_of_work() as session:  # an operation an hour old: put off by the schedule's last delay (2 s here)
        session.get(Operation, stuck["id"]).created_at = utcnow() - timedelta(hours=1)
    callbacks.query_status(stuck["id"])
    assert op(stuck["id"]).next_query_at >= utcnow() + timedelta(seconds=1.5)

    alpha_back()  # a process that runs acq_alpha
    assert callbacks.query_status(stuck["id"]) == "succeeded"


def test_the_sweep_queues_the_longest_due_queries_first(stack):
    api = builders.api(stack.client)
    first, second = (api.post("/v1/payments", builders.payment_body(2054)).get_json() for _ in range(2))
    with unit_of_work() as session:  # the later payment has waited longer for its query
        session.get(Operation, first["id"]).next_query_at = utcnow() - timedelta(seconds=5)
        session.get(Operation, second["id"]).next_query_at = utcnow() - timedelta(minutes=5)
    assert callbacks.sweep(batch=1)["queries"] == 1
    assert get_redis().exists(f"payrouter:sweep:query-{second['id']}")
    assert not get_redis().exists(f"payrouter:sweep:query-{first['id']}")
