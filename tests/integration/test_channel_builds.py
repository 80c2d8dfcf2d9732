"""Every process that runs channels reports what it built (issue #14 item 7, review finding S3):
an import that a running process cannot build is no longer a silent success. The process keeps
the previous definitions and says so (its build report, ``/readyz``, the metrics, the console), tries
again on every change and periodically; ``channels import`` waits for the live processes and exits
non-zero naming those that failed or did not answer; ``channels list`` lists definitions the CLI's
own process cannot build instead of failing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
import yaml

from app.adapters import channel_builds, channel_definitions, channels_runtime
from app.adapters.db import unit_of_work
from app.config import get_config, scoped
from tests.integration import test_channels_live
from tests.integration.test_admin_console import logged_in
from tests.integration.test_channels_live import GAMMA, cli, with_channel
from tests.live import api_server, process_env
from tests.support import wait_until

UPI = {"type": "upi"}
stored = test_channels_live.stored  # the fixture: the database initialised from the three test channels


OPS_TOKEN = "ops-token-for-the-channel-build-tests"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}


def gamma_at(path, base_url: str, **extra) -> str:
    return with_channel(path, "http://127.0.0.1:1", **{**GAMMA, "config": {"base_url": base_url}, **extra})


def with_env(config, **env):
    """``config`` as a process whose environment also has ``env`` reads it (the CLI's own)."""
    return config.with_(channel_env={**os.environ, **env})


def start_worker(config) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app", "worker", "batch"], env=process_env(config),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGCONT)
        os.killpg(worker.pid, signal.SIGTERM)  # the worker and its scheduler process
    worker.wait(timeout=15)


def live_roles() -> list[str]:
    return sorted(report.role for report in channel_builds.live())


def simulate(base: str, method: dict | None = None) -> requests.Response:
    """A routing simulation over HTTP (a card payment, else ``method``)."""
    from tests import builders

    api = builders.api(requests.Session())
    body = builders.payment_body(1000, **({"payment_method": dict(method)} if method else {}))
    return requests.post(f"{base}/v1/routing/simulate", headers=api.headers(), timeout=10, json=body)


def test_an_import_a_running_process_cannot_build_fails_naming_it_and_the_process_keeps_its_channels(
        stored, app, tmp_path):
    """A real API server (two gunicorn workers) and an RQ worker run without GAMMA_URL; the CLI has
    it. Importing acq_gamma with base_url ${GAMMA_URL} stores it, but `channels import` exits 3
    naming each of the three processes and why; they route on every other stored channel, /readyz
    says degraded (why only with the ops token), /metrics and the console show it, `channels list`
    works. Importing a definition they can build then exits 0 with all three built."""
    assert "GAMMA_URL" not in os.environ
    cli_config = with_env(stored, GAMMA_URL="http://127.0.0.1:1")
    broken = gamma_at(tmp_path / "gamma_env.yaml", "${GAMMA_URL}")
    fixed = gamma_at(tmp_path / "gamma_fixed.yaml", "http://127.0.0.1:2")
    worker = start_worker(stored)
    try:
        with api_server(stored, PAYROUTER_OPS_TOKEN=OPS_TOKEN) as base:
            wait_until(lambda: live_roles() == ["api", "api", "worker"], timeout=20, what="three processes reporting")
            before = channel_definitions.version(channel_definitions.current())
            with scoped(cli_config):
                code, out = cli("channels", "import", broken, "--reason", "gamma from the env")
            assert code == 3, out
            assert "added: acq_gamma" in out and "built by 0 of 3 live processes" in out, out
            failed = [line for line in out.splitlines() if line.strip().startswith("FAILED")]
            assert len(failed) == 3 and all("GAMMA_URL is not set" in line for line in failed), out
            assert {report.pid for report in channel_builds.live()} == {
                int(line.split(" pid ")[1].split(":")[0]) for line in failed}
            assert sum("worker" in line for line in failed) == 1 and sum(" api " in line for line in failed) == 2
            assert all("(runs the others without acq_gamma)" in line for line in failed), out

            with scoped(cli_config):  # again, as JSON: nothing changes, the processes still cannot build it
                code, out = cli("channels", "import", broken, "--json")
            done = json.loads(out)
            assert code == 3 and done["added"] == [] and done["builds"]["version"] == done["version"] != before
            assert [p["outcome"] for p in done["builds"]["processes"]] == ["failed"] * 3
            assert {p["role"] for p in done["builds"]["processes"]} == {"api", "worker"}
            assert all(p["version"] == p["stored_version"] == done["version"] and p["unbuilt"] == ["acq_gamma"]
                       for p in done["builds"]["processes"])

            for _ in range(6):  # both gunicorn workers: the previous definitions still route; degraded
                assert simulate(base).status_code == 200, simulate(base).text
                assert simulate(base, UPI).status_code == 400  # acq_gamma (upi) is not run
                ready = requests.get(f"{base}/readyz", timeout=5, headers=OPS)
                assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
                assert ready.json()["checks"]["channels"].startswith(
                    f"degraded: runs version {done['version']} without acq_gamma")
                assert "GAMMA_URL is not set" in ready.json()["checks"]["channels"]
            scraped = requests.get(f"{base}/metrics", timeout=10).text
            assert 'role="worker"} 1.0' in scraped  # labels come sorted: host, pid, role
            assert scraped.count("payrouter_channels_process_stale{") == 3
            assert all(line.endswith(" 1.0") for line in scraped.splitlines()
                       if line.startswith("payrouter_channels_process_stale{"))
            assert any(line.startswith("payrouter_channels_build_failures_total") and not line.endswith(" 0.0")
                       for line in scraped.splitlines())

            code, out = cli("channels", "list")  # this process's environment lacks GAMMA_URL too
            assert code == 0, out
            assert "acq_gamma!" in out and "acq_gamma cannot be built in this process" in out
            assert "GAMMA_URL is not set" in out

            viewer, _, _ = logged_in(app, "viewer")
            page = viewer.get("/admin/channels/").get_data(as_text=True)
            assert page.count('data-current="no"') == 3 and 'data-role="worker"' in page
            assert page.count("GAMMA_URL is not set") >= 4  # three processes and this console's own
            for report in channel_builds.live():
                assert f'data-pid="{report.pid}"' in page

            with scoped(cli_config):
                code, out = cli("channels", "import", fixed, "--reason", "gamma by address")
            assert code == 0 and "changed: acq_gamma" in out and "built by 3 of 3 live processes" in out, out
            assert "FAILED" not in out
            assert _eventually(lambda: simulate(base, UPI).status_code == 200)
            ready = requests.get(f"{base}/readyz", timeout=5, headers=OPS).json()
            assert ready["status"] == "ready" and ready["checks"]["channels"] == "ok"
            assert all(not report.stale for report in channel_builds.live())
    finally:
        stop_worker(worker)


def _eventually(check, times: int = 6) -> bool:
    """``check`` true ``times`` in a row (the server's workers take turns), within 5 s."""
    return wait_until(lambda: all(check() for _ in range(times)), timeout=5, what="every worker")


@pytest.mark.postgres
def test_import_exits_4_naming_a_live_process_that_does_not_answer_in_time(stored, tmp_path):
    """An RQ worker stopped (SIGSTOP) still counts as live until its report expires: the import
    waits --wait seconds, exits 4 naming it, and once resumed the worker builds the new version
    without another notice. A worker that stops cleanly withdraws its report at once.

    PostgreSQL only: on SQLite a worker stopped inside any write transaction of its own holds the
    whole database's lock, and the import's write waits out SQLite's 60 s busy timeout: SQLite's
    property, not the import's (embedded runs under load failed so, several times this session)."""
    worker = start_worker(stored)
    try:
        wait_until(lambda: live_roles() == ["worker"], timeout=20, what="the worker reporting")
        os.killpg(worker.pid, signal.SIGSTOP)
        started = time.monotonic()
        code, out = cli("channels", "import", gamma_at(tmp_path / "g.yaml", "http://127.0.0.1:1"), "--wait", "1")
        assert code == 4, out
        assert "built by 0 of 1 live processes" in out and "NO ANSWER worker" in out and "after 1 s" in out, out
        assert time.monotonic() - started < 10  # it gave up after --wait 1 (the output says so), not hung
        version = channel_definitions.version(channel_definitions.current())
        os.killpg(worker.pid, signal.SIGCONT)
        wait_until(lambda: [r.version for r in channel_builds.live()] == [version], timeout=15,
                   what="the resumed worker building the new version")
        code, out = cli("channels", "import", tmp_path / "g.yaml", "--wait", "1")  # unchanged: all built now
        assert code == 0 and "built by 1 of 1 live processes" in out, out
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=15)
        assert channel_builds.live() == []
        code, out = cli("channels", "import", tmp_path / "g.yaml")
        assert code == 0 and "none is live" in out, out
    finally:
        stop_worker(worker)


def test_a_failed_build_is_retried_periodically_and_reported_by_the_process_thread(stored, tmp_path, monkeypatch):
    """Another host's import names an adapter package not installed in this process: the report
    thread runs the other channels and reports the one left out and why; once the package is installed, a retry
    (no new change notice) builds it and the report says so."""
    monkeypatch.setattr(channels_runtime, "RETRY_BUILD_SECONDS", 0.3)
    before = channels_runtime.registry()
    old = channels_runtime.state().version
    late = {**GAMMA, "adapter": "h2_late_adapter:LateChannel", "config": {}}
    data = yaml.safe_load(open(with_channel(tmp_path / "late.yaml", "http://127.0.0.1:1", **late)).read())
    with unit_of_work() as session:  # as `channels import` on a host where the package is installed
        channel_definitions.write(session, data["channels"], "cli:elsewhere")
    channel_definitions.announce()
    wanted = channel_definitions.version(channel_definitions.rows())
    reporter = channel_builds.start("worker")
    try:
        report = wait_until(lambda: next((r for r in channel_builds.live() if r.pid == os.getpid() and r.error), None),
                            timeout=5, what="the failure reported")
        assert old != wanted and report.version == report.stored_version == wanted and report.stale
        assert report.unbuilt == ("acq_gamma",) and "h2_late_adapter" in report.error
        running = channels_runtime.registry()
        assert "acq_gamma" not in running and running.ids() == before.ids()
        package = tmp_path / "site"
        package.mkdir()
        (package / "h2_late_adapter.py").write_text(
            "from channels.base import Channel, ChannelResult\n\n\n"
            "class LateChannel(Channel):\n    needs_secret = False\n\n"
            "    def charge(self, req):\n        return ChannelResult(status='succeeded', channel_reference='late')\n\n"
            "    def query(self, reference, channel_reference=None):\n"
            "        return ChannelResult(status='succeeded')\n\n"
            "    def verify_callback(self, headers, body):\n        raise NotImplementedError\n")
        monkeypatch.syspath_prepend(str(package))
        report = wait_until(lambda: next((r for r in channel_builds.live() if r.pid == os.getpid()
                                          and r.version == wanted and not r.unbuilt), None),
                            timeout=5, what="the retry's report")
        assert report.error is None and not report.stale
        assert "acq_gamma" in channels_runtime.registry()
        assert channels_runtime.state().failures >= 1
    finally:
        channel_builds.stop()
        reporter.join(timeout=2)
        sys.modules.pop("h2_late_adapter", None)
    assert all(r.pid != os.getpid() for r in channel_builds.live())  # a clean stop withdraws the report


def test_channels_list_shows_definitions_this_process_cannot_build(stored, tmp_path):
    """`channels list` in a process that lacks a ${VAR} (or an adapter) a stored definition uses:
    exit 0, every stored channel listed, that one marked with why (it failed with the error before)."""
    with scoped(with_env(stored, GAMMA_URL="http://127.0.0.1:1")):
        code, out = cli("channels", "import", gamma_at(tmp_path / "g.yaml", "${GAMMA_URL}"))
        assert code == 0, out
    channels_runtime.reset()  # a fresh CLI process, with no GAMMA_URL
    assert "GAMMA_URL" not in get_config().channel_env
    code, out = cli("channels", "list", "--json")
    assert code == 0, out
    rows = {row["id"]: row for row in json.loads(out)}
    assert list(rows) == ["sandbox", "acq_alpha", "acq_beta", "acq_gamma"]
    assert "GAMMA_URL is not set" in rows["acq_gamma"]["build_error"] and rows["acq_gamma"]["runs_here"] is False
    assert rows["acq_gamma"]["methods"] == ["upi"] and rows["acq_gamma"]["mode"] == "test"
    assert rows["acq_alpha"]["build_error"] is None
    code, out = cli("channels", "list")
    assert code == 0 and "acq_gamma!" in out and "GAMMA_URL is not set" in out, out


@pytest.fixture(autouse=True)
def _no_reporter_left():
    yield
    channel_builds.stop()


def with_delta(path, gamma_url: str) -> str:
    """The test channels, acq_gamma on ``gamma_url`` and acq_delta (upi too), which any process can build."""
    gamma_at(path, gamma_url)
    data = yaml.safe_load(path.read_text())
    data["channels"].append({"id": "acq_delta", "adapter": "sandbox", "operations": ["payment", "refund"],
                             "timeout_ms": 400, "methods": ["upi"], "currencies": ["USD", "INR"],
                             "config": {"base_url": "http://127.0.0.1:1", "secret_env": "ACQ_DELTA_SECRET"}})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def api_reports(but: int | None = None) -> list[channel_builds.Report]:
    return [r for r in channel_builds.live() if r.role == "api" and r.pid != but]


def test_every_process_runs_the_stored_channels_it_can_build_a_respawned_worker_and_a_new_process_too(
        stored, tmp_path):
    """Review finding 3 (outsider's attack on #14): after an import adding acq_gamma on ${GAMMA_URL}
    (which the servers lack) and acq_delta (which they can build), each gunicorn worker runs acq_delta
    without acq_gamma and says so. A worker killed with SIGKILL and respawned by the master does not run
    the master's boot set: it builds the stored one and reports the same. A new `payrouter serve` and a
    new `payrouter worker` start (they refused to, on GAMMA_URL) and run the same channels. Unauthenticated,
    /readyz says only status words; with the ops token, why."""
    cli_config = with_env(stored, GAMMA_URL="http://127.0.0.1:1")
    both = with_delta(tmp_path / "both.yaml", "${GAMMA_URL}")
    with api_server(stored, PAYROUTER_OPS_TOKEN=OPS_TOKEN) as base:
        wait_until(lambda: len(api_reports()) == 2, timeout=20, what="two workers reporting")
        boot = channel_definitions.version(channel_definitions.current())
        with scoped(cli_config):
            code, out = cli("channels", "import", both, "--reason", "gamma and delta")
        assert code == 3 and "added: acq_gamma, acq_delta" in out, out
        version = channel_definitions.version(channel_definitions.current())
        assert version != boot
        assert [(r.version, r.unbuilt) for r in api_reports()] == [(version, ("acq_gamma",))] * 2

        killed = api_reports()[0].pid
        os.kill(killed, signal.SIGKILL)  # the master forks a new worker from its boot state
        respawned = wait_until(lambda: next((r for r in api_reports(but=killed) if r.pid != api_reports()[1].pid
                                             and r.started_at > time.time() - 30), None) if len(
            api_reports(but=killed)) == 2 else None, timeout=30, what="the respawned worker reporting")
        assert respawned.version == respawned.stored_version == version, respawned
        assert killed not in {r.pid for r in channel_builds.live()}  # the master withdrew its report at once
        assert respawned.unbuilt == ("acq_gamma",) and "GAMMA_URL is not set" in respawned.error
        for _ in range(16):  # whichever worker answers, acq_delta runs: upi is accepted (400 while none runs)
            routed = simulate(base, UPI)
            assert routed.status_code == 200, routed.text

        outsider = requests.get(f"{base}/readyz", timeout=5)
        assert outsider.status_code == 200
        assert outsider.json() == {"status": "degraded",
                                   "checks": {"database": "ok", "redis": "ok", "channels": "degraded"}}
        assert "GAMMA_URL" not in outsider.text and version not in outsider.text
        assert requests.get(f"{base}/readyz", timeout=5,
                            headers={"Authorization": "Bearer not-the-token"}).json() == outsider.json()
        for _ in range(6):
            told = requests.get(f"{base}/readyz", timeout=5, headers=OPS).json()
            assert told["status"] == "degraded" and told["channels"]["unbuilt"] == ["acq_gamma"], told
            assert told["checks"]["channels"].startswith(f"degraded: runs version {version} without acq_gamma")
            assert "GAMMA_URL is not set" in told["checks"]["channels"]

        worker = start_worker(stored)  # a new process of each kind starts, with what it can build
        try:
            with api_server(stored) as second:
                assert simulate(second, UPI).status_code == 200
                assert requests.get(f"{second}/readyz", timeout=5).json()["status"] == "degraded"
                reports = wait_until(lambda: (lambda found: found if len(found) == 5 else None)(
                    channel_builds.live()), timeout=20, what="two workers of each server and the RQ worker reporting")
                assert {(r.version, r.unbuilt) for r in reports} == {(version, ("acq_gamma",))}
                with scoped(cli_config):
                    code, out = cli("channels", "import", with_delta(tmp_path / "fixed.yaml", "http://127.0.0.1:2"))
                assert code == 0 and "built by 5 of 5 live processes" in out, out
                assert simulate(second, UPI).status_code == 200
                assert requests.get(f"{second}/readyz", timeout=5).json()["status"] == "ready"
        finally:
            stop_worker(worker)


def test_rules_publish_exits_3_naming_a_channel_a_live_process_runs_without(stored, tmp_path):
    """Review finding 7c: a rule naming a stored channel that a live process could not build is
    published (the channel is stored) but the command exits 3 naming the channel and the processes
    that drop it from routing; once they build it, publishing exits 0 with no warning."""
    from tests.integration.test_channels_live import GAMMA_RULES

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(GAMMA_RULES)
    worker = start_worker(stored)
    try:
        wait_until(lambda: live_roles() == ["worker"], timeout=20, what="the worker reporting")
        with scoped(with_env(stored, GAMMA_URL="http://127.0.0.1:1")):
            code, out = cli("channels", "import", gamma_at(tmp_path / "g.yaml", "${GAMMA_URL}"))
        assert code == 3, out
        code, out = cli("rules", "publish", rules_file, "--reason", "upi to gamma")
        assert code == 3, out
        assert "published version" in out and "warning: acq_gamma is stored but not run by 1 live process" in out, out
        assert f"worker {channel_builds.live()[0].host} pid {worker.pid}" in out
        code, out = cli("channels", "import", gamma_at(tmp_path / "fixed.yaml", "http://127.0.0.1:2"))
        assert code == 0, out
        rules_file.write_text(GAMMA_RULES.replace("priority: 500", "priority: 501"))
        code, out = cli("rules", "publish", rules_file, "--reason", "upi to gamma, built now")
        assert code == 0 and "published version" in out and "warning" not in out, out
    finally:
        stop_worker(worker)


def test_a_forked_process_builds_the_stored_definitions_not_those_it_inherited(stored, tmp_path):
    """What post_fork does in each gunicorn worker (a respawn included): the registry and the copy of
    the definitions inherited from the master (built at boot, trusted for a while) are dropped, the
    stored definitions built at once, with none of the master's channel instances (their HTTP
    connections are the master's)."""
    inherited = channels_runtime.registry()  # the master's, at boot
    data = yaml.safe_load(open(with_delta(tmp_path / "d.yaml", "http://127.0.0.1:1")).read())
    with unit_of_work() as session:  # changed since the boot, the change not yet noticed here
        channel_definitions.write(session, data["channels"], "cli:elsewhere")
    channels_runtime.after_fork()
    state = channels_runtime.state()
    assert state.version == channel_definitions.version(channel_definitions.rows()) and not state.stale
    running = channels_runtime.registry()
    assert running.ids() == ["sandbox", "acq_alpha", "acq_beta", "acq_gamma", "acq_delta"]
    assert all(running.get(cid) is not inherited.get(cid) for cid in inherited.ids())


def test_a_channel_whose_adapter_raises_while_it_builds_is_left_out_and_the_others_run(stack, tmp_path):
    """Attack a14 S1: this process's environment gives acq_beta's ``${VAR}`` a value the adapter
    rejects with a ValueError (a URL without its scheme), not a ChannelConfigError. Only acq_beta is
    left out (the reason kept and shown to the operator, /readyz degraded, so `channels import` exits 3
    for this process); a payment on the untouched sandbox goes through; the app starts, a forked
    worker builds, and ``channels list``'s diagnosis names it instead of raising."""
    from tests import builders
    from tests.integration.conftest import channels_file_with

    path = tmp_path / "beta_from_env.yaml"
    path.write_text(open(stack.config.channels_file).read())
    channels_file_with(path, stack.sandbox_url, acq_beta={"base_url": "${H4_BETA_URL:-http://127.0.0.1:1}"})
    builders.store_channels(path)  # the importing CLI has no H4_BETA_URL: the default builds there
    channels_runtime.reset()
    stack.serve(stack.config.with_(channel_env={**os.environ, "H4_BETA_URL": "acq-beta.example.com:443"},
                                   ops_token=OPS_TOKEN))  # the app factory builds the channels (prepare)
    assert channels_runtime.registry().ids() == ["sandbox", "acq_alpha"]
    state = channels_runtime.state()
    assert state.unbuilt == ("acq_beta",) and "ValueError" in state.error and "not an http(s) URL" in state.error

    api = builders.api(stack.client)
    paid = api.post("/v1/payments", builders.payment_body(1000))  # the default route: the sandbox
    assert paid.status_code == 201, paid.get_json()
    assert paid.get_json()["routing"]["channel"] == "sandbox"
    ready = stack.client.get("/readyz", headers=OPS).get_json()
    assert ready["status"] == "degraded" and ready["channels"]["unbuilt"] == ["acq_beta"]
    assert "without acq_beta" in ready["checks"]["channels"]

    channels_runtime.prepare()  # `serve` / `payrouter worker` at start: no exception
    channels_runtime.after_fork()  # gunicorn's post_fork (a respawned worker): no exception
    assert channels_runtime.registry().ids() == ["sandbox", "acq_alpha"]
    assert list(channels_runtime.diagnose()) == ["acq_beta"]
