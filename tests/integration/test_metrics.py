"""GET /metrics (CONTRACT §5): counters move by exactly the work done, summed over two gunicorn
workers (prometheus-client's multiprocess mode); route labels are templates; the bearer token."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.adapters import channels_runtime
from app.adapters.channel_secrets import StoredChannelSecrets
from app.config import scoped
from channels.sandbox.server import SandboxServer
from channels.sandbox.testing import FAST_SANDBOX_OPTIONS, write_channels_file
from tests import builders
from tests.live import free_port, process_env, stop, wait_http


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


PAID = dict(kind="payment", status="succeeded", channel="sandbox")
DECLINED = dict(kind="payment", status="failed", channel="sandbox")


@pytest.fixture
def sandbox_channels(clean, tmp_path):
    from app.services.rules_store import seed_default_rules

    channels_file = write_channels_file(tmp_path / "channels.yaml", "http://127.0.0.1:1", timeout_ms=400)
    sandbox = SandboxServer("127.0.0.1", 0, channels_file, stored=StoredChannelSecrets(), **FAST_SANDBOX_OPTIONS)
    write_channels_file(channels_file, sandbox.url, timeout_ms=400)
    with scoped(clean.with_(channels_file=channels_file)):  # what this process does (the rules seeded) uses it
        channels_runtime.reset()
        builders.store_channels()
        seed_default_rules()
        sandbox.start()
        try:
            yield channels_file
        finally:
            sandbox.stop()
            channels_runtime.reset()


@contextmanager
def served(config, metrics_dir, channels_file, workers: int = 2):
    """``payrouter serve`` with two gunicorn workers on a free port (the sandbox calls back to it)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = process_env(config, PAYROUTER_CHANNELS=channels_file, PROMETHEUS_MULTIPROC_DIR=metrics_dir,
                      PAYROUTER_PUBLIC_URL=base)
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(workers),
                             "--threads", "4"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(base + "/readyz", proc=proc)
        yield base, env
    finally:
        stop(proc)


def worker_pids_with_counters(directory) -> set[int]:
    return {int(m.group(1)) for f in directory.iterdir() if (m := re.fullmatch(r"counter_(\d+)\.db", f.name))}


def test_a_payment_counts_once_across_two_gunicorn_workers(clean, sandbox_channels, tmp_path):
    metrics_dir = tmp_path / "metrics"
    _merchant_id, secret = builders.merchant()
    auth = {"Authorization": f"Bearer {secret}", "Connection": "close"}  # a new connection each: either worker
    with served(clean, metrics_dir, sandbox_channels) as (base, env):
        before = samples(requests.get(base + "/metrics", timeout=10).text)
        paid = []
        for amount in (2000, 2000, 2000, 2000, 2051):  # four succeed, one is declined
            response = requests.post(base + "/v1/payments", json=builders.payment_body(amount),
                                     headers={**auth, "Idempotency-Key": builders.unique("idem")}, timeout=10)
            assert response.status_code == 201, response.text
            paid.append(response.json())
        assert [p["status"] for p in paid] == ["succeeded"] * 4 + ["failed"]
        # A replay is the same payment: it settles nothing again.
        body = builders.payment_body(2000)
        for _ in range(2):
            replay = requests.post(base + "/v1/payments", json=body, headers={**auth, "Idempotency-Key": "same"},
                                   timeout=10)
        assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true"
        requests.get(f"{base}/v1/payments/{paid[0]['id']}", headers=auth, timeout=10)
        requests.get(base + "/no/such/path/" + paid[0]["id"], timeout=10)
        deadline = time.monotonic() + 10  # until both workers have answered (the kernel picks which accepts)
        while len(worker_pids_with_counters(metrics_dir)) < 2 and time.monotonic() < deadline:
            requests.get(base + "/healthz", headers={"Connection": "close"}, timeout=10)
        assert len(worker_pids_with_counters(metrics_dir)) >= 2
        text = requests.get(base + "/metrics", timeout=10).text
        # Settled by an RQ worker (a callback): counted by that process, shown by the API's /metrics.
        late = requests.post(base + "/v1/payments", json=builders.payment_body(2052),
                             headers={**auth, "Idempotency-Key": builders.unique("idem")}, timeout=10).json()
        assert late["status"] == "processing"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.3)  # the sandbox calls back after 0.2 s; the API stores it and queues the job
            subprocess.run([sys.executable, "-m", "app", "worker", "--burst", "core"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            if requests.get(f"{base}/v1/payments/{late['id']}", headers=auth, timeout=10).json()["status"] != (
                    "processing"):
                break
        with_worker = samples(requests.get(base + "/metrics", timeout=10).text)
    after = samples(text)
    assert value(after, "payrouter_operations_total", **PAID) - value(before, "payrouter_operations_total", **PAID) == 5
    assert value(with_worker, "payrouter_operations_total", **PAID) - value(after, "payrouter_operations_total",
                                                                            **PAID) == 1
    assert value(with_worker, "payrouter_callback_lag_seconds_count") >= 1  # the worker applied its callback(s)
    assert value(after, "payrouter_operations_total", **DECLINED) - value(
        before, "payrouter_operations_total", **DECLINED) == 1
    posts = dict(method="POST", route="/v1/payments", status="201")
    assert value(after, "payrouter_http_requests_total", **posts) == 7
    assert value(after, "payrouter_http_request_duration_seconds_count", method="POST", route="/v1/payments") == 7
    assert value(after, "payrouter_rules_decision_seconds_count") >= 6
    routes = {dict(labels)["route"] for name, labels in after if name == "payrouter_http_requests_total"}
    assert "unmatched" in routes and any("<" in r and r.startswith("/v1/payments/") for r in routes)
    assert not any(paid[0]["id"] in r for r in routes)  # templates, never raw paths
    assert {dict(labels)["queue"] for name, labels in after if name == "payrouter_queue_depth"} == {
        "core", "webhooks", "batch"}
    assert value(after, "payrouter_channel_circuit_open", channel="sandbox") == 0
    assert value(after, "payrouter_reconciliation_open_issues", channel="sandbox") == 0


def test_a_transfer_counts_once_and_a_refused_one_not(client):
    api = builders.api(client)
    source, target = api.account(funded=1000), api.account()
    before = samples(client.get("/metrics").get_data(as_text=True))
    assert api.post("/v1/transfers", api.transfer_body(source["id"], target["id"], 600)).status_code == 201
    assert api.post("/v1/transfers", api.transfer_body(source["id"], target["id"], 600)).status_code == 402  # short
    after = samples(client.get("/metrics").get_data(as_text=True))
    moved = dict(kind="transfer", status="succeeded", channel="ledger")
    counted = value(after, "payrouter_operations_total", **moved) - value(before, "payrouter_operations_total", **moved)
    assert counted == 1


def test_the_metrics_token_is_required_when_set(app, clean, configured):
    client = configured(clean.with_(metrics_token="scrape-secret")).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-secret"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["type"] == "authentication_error"
        assert response.get_json()["error"]["code"] == "invalid_metrics_token"
    response = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert "# TYPE payrouter_operations_total counter" in response.get_data(as_text=True)
    assert app.test_client().get("/metrics").status_code == 200  # the run's app, no token set: open


def test_without_redis_the_scrape_leaves_out_queue_depths_only(clean, configured):
    from app.adapters import redis_conn
    from tests.outage_support import PrivateRedis

    private = PrivateRedis().start()
    try:
        app = configured(clean.with_(redis_url=private.url))
        redis_conn.reset()
        found = samples(app.test_client().get("/metrics").get_data(as_text=True))
        assert value(found, "payrouter_queue_depth", queue="core") == 0
        assert ("payrouter_queue_depth", (("queue", "core"),)) in found
        private.hang()  # hung: one wait of REQUEST_TIMEOUT, then Redis is marked down in this process
        started = time.perf_counter()
        response = app.test_client().get("/metrics")
        assert response.status_code == 200 and time.perf_counter() - started < 2
        found = samples(response.get_data(as_text=True))
        assert not any(name == "payrouter_queue_depth" for name, _labels in found)
        assert ("payrouter_reconciliation_open_issues", (("channel", "sandbox"),)) in found
    finally:
        private.stop()
        redis_conn.reset()


def test_a_settlement_rolled_back_counts_nothing(stack):
    """A balance payment wins its transition, then the ledger refuses it (402): rolled back, not counted."""
    api = builders.api(stack.client)
    wallet = api.account(funded=5000)
    paid = dict(kind="payment", status="succeeded", channel="ledger")

    def counted() -> float:
        return value(samples(stack.client.get("/metrics").get_data(as_text=True)), "payrouter_operations_total",
                     **paid)

    before = counted()
    body = builders.payment_body(1200, payment_method={"type": "balance", "account": wallet["id"]})
    assert api.post("/v1/payments", body).get_json()["status"] == "succeeded"
    short = api.post("/v1/payments", builders.payment_body(9999, payment_method={"type": "balance",
                                                                                  "account": wallet["id"]}))
    assert short.status_code == 402 and short.get_json()["error"]["code"] == "insufficient_funds"
    assert counted() - before == 1


def test_a_process_counting_in_memory_scrapes_its_memory_whatever_the_environment_says_later(
        client, monkeypatch, tmp_path):
    """An in-process `payrouter serve` (as the CLI tests run it) sets PROMETHEUS_MULTIPROC_DIR after
    prometheus_client chose to count in memory: /metrics must still show this process's counts."""
    from prometheus_client import values

    if values.ValueClass is not values.MutexValue:
        pytest.skip("this test process counts in multiprocess files")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    api = builders.api(client)
    source, target = api.account(funded=1000), api.account()
    before = samples(client.get("/metrics").get_data(as_text=True))
    assert api.post("/v1/transfers", api.transfer_body(source["id"], target["id"], 600)).status_code == 201
    after = samples(client.get("/metrics").get_data(as_text=True))
    moved = dict(kind="transfer", status="succeeded", channel="ledger")
    counted = value(after, "payrouter_operations_total", **moved) - value(before, "payrouter_operations_total", **moved)
    assert counted == 1
