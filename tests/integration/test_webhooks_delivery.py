"""Webhook delivery end to end: a transfer's event, the relay, real RQ jobs, a real HTTP receiver."""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
from datetime import timedelta

import requests
from sqlalchemy import func, select, update
from standardwebhooks import Webhook

from app import context
from app.adapters import jobs
from app.adapters.db import unit_of_work
from app.adapters.models import utcnow
from app.adapters.webhook_models import WebhookAttempt, WebhookDelivery
from app.entrypoints import worker
from app.services import switches
from app.services.webhooks import delivery, relay
from tests import builders
from tests.webhook_support import create_endpoint, pump, transfer, work


def verify(secret: str, request: dict) -> dict:
    return Webhook(secret).verify(request["body"], request["headers"])


def deliveries_of(api, endpoint_id: str) -> list[dict]:
    response = api.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def test_delivery_is_signed_standard_webhooks_and_carries_the_request_id(wh_client, receiver):
    api, r = builders.api(wh_client), receiver()
    endpoint = create_endpoint(api, r.url)
    obj, request_id = transfer(api)
    pump()
    assert len(r.requests) == 1
    sent = r.requests[0]
    payload = verify(endpoint["secret"], sent)
    event = api.get("/v1/events").get_json()["data"][0]
    assert list(json.loads(sent["body"])) == ["id", "type", "created_at", "data"]
    assert payload == {"id": event["id"], "type": "transfer.succeeded", "created_at": event["created_at"],
                       "data": obj}
    assert sent["headers"]["webhook-id"] == event["id"]
    assert sent["headers"]["X-Request-Id"] == request_id
    assert sent["headers"]["Content-Type"] == "application/json"
    [row] = deliveries_of(api, endpoint["id"])
    assert row["status"] == "succeeded" and row["event"] == event["id"] and row["request_id"] == request_id
    assert [(a["number"], a["status_code"]) for a in row["attempts"]] == [(1, 200)]
    assert api.get(f"/v1/events/{event['id']}/deliveries").get_json()["data"] == [row]


def test_fails_twice_then_succeeds_with_one_webhook_id(wh_client, receiver):
    api, r = builders.api(wh_client), receiver([500, 503])
    endpoint = create_endpoint(api, r.url)
    transfer(api)
    pump()
    assert len(r.requests) == 3
    assert len({q["headers"]["webhook-id"] for q in r.requests}) == 1
    for q in r.requests:
        verify(endpoint["secret"], q)
    [row] = deliveries_of(api, endpoint["id"])
    assert row["status"] == "succeeded" and row["attempt_count"] == 3
    assert [a["status_code"] for a in row["attempts"]] == [500, 503, 200]
    assert all(a["latency_ms"] >= 0 for a in row["attempts"])


def test_never_succeeds_ends_failed_after_the_schedule_then_redelivers(wh_client, receiver):
    api, r = builders.api(wh_client), receiver(default=500)
    endpoint = create_endpoint(api, r.url)
    transfer(api)
    pump()
    assert len(r.requests) == 3  # schedule (0, 0, 0): three attempts
    [row] = deliveries_of(api, endpoint["id"])
    assert row["status"] == "failed" and row["attempt_count"] == 3 and row["last_status_code"] == 500
    pump()
    assert len(r.requests) == 3  # a failed delivery stays failed
    r.default = 200
    response = api.post(f"/v1/events/{row['event']}/redeliver", {"endpoint": endpoint["id"]})
    assert response.status_code == 200, response.get_json()
    assert [d["redelivery"] for d in response.get_json()["data"]] == [True]
    work()
    assert len(r.requests) == 4 and r.requests[-1]["headers"]["webhook-id"] == row["event"]
    assert [d["status"] for d in deliveries_of(api, endpoint["id"])] == ["succeeded", "failed"]


def test_redelivery_to_an_unknown_endpoint_names_the_body_field(wh_client, receiver):
    """The endpoint is named in the body: its 404 says ``param: endpoint``, as an unknown event (in the
    path) says ``id``; another merchant's endpoint answers exactly as an unknown one."""
    api, other, r = builders.api(wh_client), builders.api(wh_client, "Other"), receiver()
    create_endpoint(api, r.url)
    foreign = create_endpoint(other, r.url)
    transfer(api)
    pump()
    event = api.get("/v1/events").get_json()["data"][0]
    for endpoint_id in ("we_nothing", foreign["id"]):
        response = api.post(f"/v1/events/{event['id']}/redeliver", {"endpoint": endpoint_id})
        error = response.get_json()["error"]
        assert response.status_code == 404 and (error["code"], error["param"]) == ("resource_missing", "endpoint")
    unknown_event = api.post("/v1/events/evt_nothing/redeliver", {"endpoint": "we_nothing"})
    assert unknown_event.status_code == 404 and unknown_event.get_json()["error"]["param"] == "id"


def test_timeout_is_a_failed_attempt(wh_config, configured, receiver):
    app = configured(wh_config.with_(webhook_retry_schedule=(0,), webhook_timeout=0.3))
    api, r = builders.api(app.test_client()), receiver(delay=1.0)
    endpoint = create_endpoint(api, r.url)
    transfer(api)
    pump()
    [row] = deliveries_of(api, endpoint["id"])
    assert row["status"] == "failed" and row["attempts"][0]["error"] == "timeout"
    assert row["attempts"][0]["status_code"] is None


def test_a_refused_connection_is_said_so_not_called_a_timeout(wh_config, configured, receiver):
    """Nothing listening at the endpoint fails at once: the attempt says the connection was refused
    (urllib3's NewConnectionError is a ConnectTimeoutError), so the merchant does not look for a slow server."""
    app = configured(wh_config.with_(webhook_retry_schedule=(0,)))
    api, gone = builders.api(app.test_client()), receiver()
    endpoint = create_endpoint(api, gone.url)
    gone.close()  # its port is closed now: connecting is refused
    transfer(api)
    pump()
    [row] = deliveries_of(api, endpoint["id"])
    [attempt] = row["attempts"]
    assert row["status"] == "failed" and attempt["status_code"] is None
    assert attempt["error"] != "timeout" and "connection refused" in attempt["error"].lower(), attempt
    assert row["last_error"] == attempt["error"]


def test_only_subscribed_live_endpoints_receive(wh_client, receiver):
    api, other = builders.api(wh_client), builders.api(wh_client, "Other")
    everything, payments, deleted, foreign = receiver(), receiver(), receiver(), receiver()
    create_endpoint(api, everything.url)
    create_endpoint(api, payments.url, ["payment.succeeded"])
    gone = create_endpoint(api, deleted.url, ["transfer.succeeded"])
    assert api.client.delete(f"/v1/webhook_endpoints/{gone['id']}", headers=api.headers()).status_code == 200
    create_endpoint(other, foreign.url)
    transfer(api)
    pump()
    assert (len(everything.requests), len(payments.requests), len(deleted.requests), len(foreign.requests)) \
        == (1, 0, 0, 0)


def test_duplicate_relays_and_jobs_send_once_per_endpoint(wh_client, receiver):
    api, r1, r2 = builders.api(wh_client), receiver(), receiver()
    create_endpoint(api, r1.url)
    create_endpoint(api, r2.url)
    for _ in range(3):
        transfer(api)
    errors = []

    def relay_pass():
        try:
            relay.run_once()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=relay_pass) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    relay.run_once()
    with unit_of_work() as session:
        ids = list(session.scalars(select(WebhookDelivery.id)))
    for delivery_id in ids:  # duplicated jobs for every delivery
        jobs.enqueue(jobs.WEBHOOKS, delivery.JOB, delivery_id)
        jobs.enqueue(jobs.WEBHOOKS, delivery.JOB, delivery_id)
    work()
    relay.run_once()
    work()
    assert not errors, errors
    assert len(ids) == 6
    for r in (r1, r2):
        assert len(r.requests) == 3
        assert len({q["headers"]["webhook-id"] for q in r.requests}) == 3
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(WebhookAttempt)) == 6


def test_paused_webhooks_send_nothing_until_lifted(wh_client, receiver):
    api, r = builders.api(wh_client), receiver()
    create_endpoint(api, r.url)
    transfer(api)
    relay.run_once()  # queued before the pause: the job must not send either
    switches.set("webhooks", True, "test", "incident")
    transfer(api)
    pump()
    pump()
    assert r.requests == []
    with unit_of_work() as session:
        assert set(session.scalars(select(WebhookDelivery.status))) == {"pending"}
    switches.set("webhooks", False, "test", "resolved")
    pump()
    assert len(r.requests) == 2


def test_a_lost_attempt_is_recovered_after_its_lease(wh_client, receiver):
    api, r = builders.api(wh_client), receiver()
    create_endpoint(api, r.url)
    transfer(api)
    relay.run_once()
    with unit_of_work() as session:  # as if a worker claimed attempt 1 and died
        session.execute(update(WebhookDelivery).values(status="sending", attempts=1, enqueued_at=None,
                                                       leased_until=utcnow() - timedelta(seconds=1)))
    jobs.queue(jobs.WEBHOOKS).empty()
    pump()
    assert len(r.requests) == 1
    with unit_of_work() as session:
        row = session.scalars(select(WebhookDelivery)).one()
        attempts = list(session.scalars(select(WebhookAttempt).order_by(WebhookAttempt.number)))
    assert row.status == "succeeded" and row.attempts == 2
    assert [a.error is not None for a in attempts] == [True, False]


def test_a_job_lost_by_redis_is_requeued_by_the_sweep(wh_config, configured, receiver):
    app = configured(wh_config.with_(webhook_sweep_grace=0))
    api, r = builders.api(app.test_client()), receiver()
    create_endpoint(api, r.url)
    transfer(api)
    relay.run_once()
    jobs.queue(jobs.WEBHOOKS).empty()  # Redis lost the job
    with unit_of_work() as session:
        session.execute(update(WebhookDelivery).values(enqueued_at=utcnow() - timedelta(seconds=5),
                                                       next_attempt_at=utcnow() - timedelta(seconds=5)))
    pump()
    assert len(r.requests) == 1


def test_rotation_signs_with_both_secrets_during_the_overlap(wh_client, receiver):
    api, r = builders.api(wh_client), receiver()
    endpoint = create_endpoint(api, r.url)
    response = api.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", {})
    assert response.status_code == 200, response.get_json()
    rotated = response.get_json()
    assert rotated["secret"] != endpoint["secret"] and rotated["previous_secret_expires_at"]
    transfer(api)
    pump()
    sent = r.requests[0]
    assert len(sent["headers"]["webhook-signature"].split(" ")) == 2
    verify(endpoint["secret"], sent)
    verify(rotated["secret"], sent)
    response = api.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", {"overlap_seconds": 0})
    newest = response.get_json()["secret"]
    assert len(base64.b64decode(newest.removeprefix("whsec_"))) >= 24
    transfer(api)
    pump()
    assert len(r.requests[1]["headers"]["webhook-signature"].split(" ")) == 1
    verify(newest, r.requests[1])


class ContextCapture(logging.Handler):
    """Records the unified context's request id at the moment each line is logged."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, str | None]] = []

    def emit(self, record):
        self.seen.append((record.getMessage(), context.current_request_id()))


def test_attempt_log_lines_carry_the_events_request_id(wh_client, receiver):
    api, r = builders.api(wh_client), receiver()
    create_endpoint(api, r.url)
    create_endpoint(api, receiver().url)  # two deliveries: sent by the batch job's threads
    _, request_id = transfer(api)
    capture = ContextCapture()
    logger = logging.getLogger("payrouter.webhooks")
    logger.addHandler(capture)
    try:
        pump()
    finally:
        logger.removeHandler(capture)
    lines = [(msg, rid) for msg, rid in capture.seen if " attempt 1 " in msg]
    assert len(lines) == 2 and {rid for _, rid in lines} == {request_id}


def test_the_webhook_workers_relay_thread_queues_within_seconds(wh_client, receiver):
    api, r = builders.api(wh_client), receiver()
    create_endpoint(api, r.url)
    (thread,) = worker.maintenance_for([jobs.WEBHOOKS])  # what `payrouter worker webhooks` runs beside its jobs
    thread.interval = 0.1
    thread.start()
    try:
        transfer(api)
        deadline = time.monotonic() + 5
        while not jobs.queue(jobs.WEBHOOKS).count:
            assert time.monotonic() < deadline, "the relay thread queued nothing"
            time.sleep(0.05)
    finally:
        thread.stopped.set()
        thread.join(5)
    work()
    assert len(r.requests) == 1


def test_cli_relay_and_redeliver(wh_client, receiver):
    from click.testing import CliRunner

    from app.entrypoints.ops_cli import webhooks as webhooks_cli

    api, r = builders.api(wh_client), receiver()
    endpoint = create_endpoint(api, r.url)
    transfer(api)
    runner = CliRunner()
    result = runner.invoke(webhooks_cli, ["relay"])
    assert result.exit_code == 0 and json.loads(result.output)["relayed"] == 1, result.output
    work()
    event_id = r.requests[0]["headers"]["webhook-id"]
    result = runner.invoke(webhooks_cli, ["redeliver", event_id, "--endpoint", endpoint["id"]])
    assert result.exit_code == 0, result.output
    work()
    assert [q["headers"]["webhook-id"] for q in r.requests] == [event_id, event_id]
    assert runner.invoke(webhooks_cli, ["redeliver", "evt_missing"]).exit_code != 0


def test_receiver_scripts_its_answers(receiver):
    r = receiver([500])
    assert requests.post(r.url, data=b"x", timeout=5).status_code == 500
    assert requests.post(r.url, data=b"y", timeout=5).status_code == 200
    assert [q["body"] for q in r.requests] == [b"x", b"y"]


def test_a_delivery_connects_to_the_address_that_was_checked(wh_client, receiver, monkeypatch):
    """DNS rebinding: the name is resolved once per attempt, the address checked, and the
    connection made to that address (with the name in Host), not to a second DNS answer."""
    import socket

    from app.services.webhooks import endpoints

    r = receiver()
    port = int(r.url.rsplit(":", 1)[1].split("/", 1)[0])
    answers = []
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):  # the name exists only here; a second lookup would fail
        if host == "hooks.merchant.test":
            answers.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    api = builders.api(wh_client)
    create_endpoint(api, f"http://hooks.merchant.test:{port}/hooks")
    transfer(api)
    answers.clear()
    relay.run_once()
    work()
    assert len(r.requests) == 1 and r.requests[0]["path"] == "/hooks"
    assert r.requests[0]["headers"]["Host"] == f"hooks.merchant.test:{port}"
    assert answers == ["hooks.merchant.test"]  # one resolution for the attempt: the check's
    target = endpoints.pin(f"http://hooks.merchant.test:{port}/hooks?x=1", allow_private=True)
    assert (target.addresses, target.port, target.path) == (("127.0.0.1",), port, "/hooks?x=1")
    assert endpoints.pin(f"http://hooks.merchant.test:{port}/hooks", allow_private=False) == \
        "url points at a loopback, private or link-local address"


def test_an_internationalised_host_goes_on_the_wire_in_its_ascii_form(wh_config, monkeypatch):
    import socket

    from app.services.webhooks import endpoints

    asked = []
    real, this_thread = socket.getaddrinfo, threading.get_ident()

    def resolver(host, *args, **kwargs):
        if threading.get_ident() != this_thread:  # the process's other threads (Redis, the listener) resolve
            return real(host, *args, **kwargs)     # as ever, and are not what this test counts
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("93.184.215.14", 8080))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    target = endpoints.pin("https://bücher.example:8080/hooks", allow_private=False)
    assert (target.hostname, target.host_header, target.addresses) == \
        ("xn--bcher-kva.example", "xn--bcher-kva.example:8080", ("93.184.215.14",))
    assert asked == ["xn--bcher-kva.example"]
    assert endpoints.pin("https://" + "a" * 64 + ".example/hooks").startswith("url host")  # a label too long


def test_a_delivery_tries_the_next_checked_address_when_one_refuses(wh_client, receiver, monkeypatch):
    """A name with several addresses (say IPv6 first, from a host without IPv6): one that refuses
    the connection took nothing, so the next checked address is tried, in the resolver's order."""
    import socket

    r = receiver()
    port = int(r.url.rsplit(":", 1)[1].split("/", 1)[0])
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host == "dual.merchant.test":  # nothing listens on 127.0.0.2; the receiver is on 127.0.0.1
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port))
                    for a in ("127.0.0.2", "127.0.0.1")]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    from app.services.webhooks import endpoints

    assert endpoints.resolve("dual.merchant.test", port) == ["127.0.0.2", "127.0.0.1"]  # the resolver's order
    api = builders.api(wh_client)
    create_endpoint(api, f"http://dual.merchant.test:{port}/hooks")
    transfer(api)
    relay.run_once()
    work()
    assert len(r.requests) == 1 and r.requests[0]["headers"]["Host"] == f"dual.merchant.test:{port}"
