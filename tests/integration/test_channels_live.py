"""Channels live in the database (issue #14 item 7, contract §4): ``init`` and ``payrouter channels
import FILE`` store them, every process obeys a change within 2 s with no restart, a rule naming a
channel nobody knows is refused at publish, ``methods`` are what the channels declare, and a
channel whose adapter takes no secret runs without one."""
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
from click.testing import CliRunner
from rq import Queue
from sqlalchemy import delete, select

from app.adapters import channel_definitions, channels_runtime
from app.adapters.channel_secrets import StoredChannelSecrets
from app.adapters.db import read_only, unit_of_work
from app.adapters.models import AuditLog, ChannelDefinition, ChannelSecret
from app.adapters.redis_conn import get_redis
from app.config import scoped
from app.entrypoints.cli import main
from app.services import channel_import
from app.services.rules_store import DEFAULT_RULES
from channels.base import Channel, ChannelResult
from channels.sandbox.server import SandboxServer
from channels.sandbox.testing import FAST_SANDBOX_OPTIONS, write_channels_file
from tests import builders
from tests.live import api_server, process_env
from tests.support import wait_until

UPI = {"type": "upi"}
# The default rules with UPI payments routed to acq_gamma (a channel the default file does not have).
GAMMA_RULES = DEFAULT_RULES.read_text().replace(
    "rules:\n", "rules:\n  - id: upi\n    priority: 500\n    when: {fact: payment_method.type, eq: upi}\n"
                "    then: {route: [acq_gamma]}\n", 1)


class KeylessChannel(Channel):
    """A PSP that signs nothing and takes no key (``needs_secret = False``)."""

    needs_secret = False

    def charge(self, req):
        return ChannelResult(status="succeeded", channel_reference=f"kl_{req.reference}")

    def query(self, reference, channel_reference=None):
        return ChannelResult(status="succeeded", channel_reference=channel_reference)

    def verify_callback(self, headers, body):
        raise NotImplementedError


def cli(*args):
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    return result.exit_code, result.output


def with_channel(path, base_url: str, **channel) -> str:
    """The test channels file (sandbox, acq_alpha, acq_beta on ``base_url``) plus ``channel``."""
    write_channels_file(path, base_url)
    data = yaml.safe_load(path.read_text())
    if channel:
        data["channels"].append({"adapter": "sandbox", "operations": ["payment", "refund"], "timeout_ms": 400,
                                 "config": {"base_url": base_url, "secret_env": "ACQ_GAMMA_SECRET"}, **channel})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


GAMMA = {"id": "acq_gamma", "methods": ["upi"], "currencies": ["USD", "INR"]}


@pytest.fixture
def stored(clean, tmp_path):
    """The database initialised from the three test channels (on a sandbox that is not there)."""
    from app.entrypoints.bootstrap import init

    config = clean.with_(channels_file=with_channel(tmp_path / "base.yaml", "http://127.0.0.1:1"))
    with scoped(config):  # this process's own (init, imports, CLI commands): as a CLI process's
        channels_runtime.reset()
        init()
        yield config
        with unit_of_work() as session:  # a test may leave definitions no later process can build
            session.execute(delete(ChannelDefinition))
    channels_runtime.reset()


def test_a_channel_added_by_channels_import_is_routed_to_by_a_running_server_within_2_s(stored, tmp_path):
    """A real API server (gunicorn, two worker processes) runs on the three channels; `channels
    import` adds acq_gamma (methods [upi]): every worker runs it within 2 s (a UPI body is no longer
    refused), and once the rules name it (refused at publish before the import), UPI payments made
    over HTTP are routed to it. Disabling it by another import is obeyed as fast."""
    gamma_file = tmp_path / "gamma.yaml"
    with_channel(gamma_file, "http://127.0.0.1:1", **GAMMA)
    sandbox = SandboxServer("127.0.0.1", 0, gamma_file, stored=StoredChannelSecrets(), **FAST_SANDBOX_OPTIONS)
    with_channel(gamma_file, sandbox.url, **GAMMA)
    with_channel(tmp_path / "base.yaml", sandbox.url)
    assert cli("channels", "import", tmp_path / "base.yaml")[0] == 0  # the three channels on the sandbox
    sandbox.start()
    rules = tmp_path / "gamma_rules.yaml"
    rules.write_text(GAMMA_RULES)
    worker = subprocess.Popen([sys.executable, "-m", "app", "worker", "batch"], env=process_env(stored),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with api_server(stored, PAYROUTER_PUBLIC_URL="http://127.0.0.1:1") as base:
            api = builders.api(requests.Session())

            def pay(amount=1000):
                body = builders.payment_body(amount, payment_method=dict(UPI))
                return requests.post(f"{base}/v1/payments", json=body, timeout=10,
                                     headers=api.headers(builders.unique("idem")))

            def simulate():
                return requests.post(f"{base}/v1/routing/simulate", headers=api.headers(), timeout=10,
                                     json=builders.payment_body(1000, payment_method=dict(UPI)))

            before = pay()
            assert before.status_code == 400, before.text  # no channel takes upi yet
            assert before.json()["error"]["param"] == "payment_method[type]"
            code, out = cli("rules", "publish", rules, "--reason", "upi", "--yes")
            assert code != 0 and "unknown channel 'acq_gamma'" in out  # refused: no process knows it

            code, out = cli("channels", "import", gamma_file, "--reason", "a UPI acquirer")
            imported = time.monotonic()
            assert code == 0 and "added: acq_gamma" in out, out
            known = _streak(simulate, lambda r: r.status_code == 200)  # every worker runs acq_gamma
            in_worker = wait_until(lambda: "acq_gamma" in worker_channels() and time.monotonic(), timeout=5,
                                   interval=0.05, what="acq_gamma in the RQ worker")
            code, out = cli("rules", "publish", rules, "--reason", "upi", "--yes")
            published = time.monotonic()
            assert code == 0, out
            routed = _streak(pay, lambda r: r.status_code == 201 and r.json()["routing"]["channel"] == "acq_gamma")
            print(f"\nacq_gamma run by the server {known - imported:.3f} s and by the RQ worker "
                  f"{in_worker - imported:.3f} s after the import; routed to "
                  f"{routed - published:.3f} s after the rules naming it were published "
                  f"({routed - imported:.3f} s after the import)")
            assert known - imported < 2.0, f"the server ran acq_gamma {known - imported:.2f} s after the import"
            assert in_worker - imported < 2.0, f"the worker ran acq_gamma {in_worker - imported:.2f} s after"
            assert routed - published < 2.0, f"routed to acq_gamma {routed - published:.2f} s after the publish"
            assert pay().json()["status"] == "succeeded"

            gamma_off = with_channel(tmp_path / "off.yaml", sandbox.url, **GAMMA, enabled=False)
            assert cli("channels", "import", gamma_off, "--reason", "pause UPI")[0] == 0
            imported = time.monotonic()
            dropped = _streak(pay, lambda r: r.status_code == 402 and r.json()["error"]["code"] == "no_route")
            print(f"no longer routed {dropped - imported:.3f} s after disabling it by import")
            assert dropped - imported < 2.0, f"still routed {dropped - imported:.2f} s after disabling"
    finally:
        sandbox.stop()
        os.killpg(worker.pid, signal.SIGTERM)  # the worker and its scheduler process
        worker.wait(timeout=15)


def worker_channels() -> list[str]:
    """The channels the RQ worker runs now (a job on its queue)."""
    job = Queue("batch", connection=get_redis()).enqueue("app.adapters.channels_runtime.ids_in_use")
    return wait_until(lambda: job.return_value() if job.get_status(refresh=True) == "finished" else None,
                      timeout=5, interval=0.02, what="the worker's answer")


def _streak(pay, wanted, timeout: float = 5.0, length: int = 8) -> float:
    """When the first of ``length`` answers in a row (the server's workers take turns) met ``wanted``."""
    deadline, first, run = time.monotonic() + timeout, None, 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        if wanted(pay()):
            first, run = (first or started), run + 1
            if run == length:
                return first
        else:
            first, run = None, 0
    raise AssertionError(f"not {length} answers in a row within {timeout} s")


def test_import_reports_what_changed_keeps_the_others_and_is_audited(stored, tmp_path):
    changed = tmp_path / "changed.yaml"
    with_channel(changed, "http://127.0.0.1:1", **GAMMA)
    data = yaml.safe_load(changed.read_text())
    data["channels"] = [c for c in data["channels"] if c["id"] != "acq_beta"]
    data["channels"][0]["cost"] = {"percent": "1.0", "fixed": 5}
    changed.write_text(yaml.safe_dump(data))
    first = channels_runtime.registry()
    alpha = first.get("acq_alpha")

    done = channel_import.import_file(changed, "cli:test", reason="cheaper sandbox")
    assert (done["added"], done["changed"], done["kept"]) == (["acq_gamma"], ["sandbox"], ["acq_beta"])
    assert done["unchanged"] == ["acq_alpha"] and done["generated_channel_secrets"] == ["acq_gamma"]
    channel_definitions.announce()  # this process re-reads at once (others within 2 s)
    now = channels_runtime.registry()
    assert now.ids() == ["sandbox", "acq_alpha", "acq_gamma", "acq_beta"]
    assert now.get("acq_alpha") is alpha  # unchanged: the same instance (its connections kept)
    assert now.get("sandbox").spec.cost.fixed == 5
    with read_only() as session:
        row = session.execute(select(AuditLog.actor, AuditLog.reason, AuditLog.after)
                              .where(AuditLog.action == "channels.import").order_by(AuditLog.id.desc())).first()
    assert row.actor == "cli:test" and row.reason == "cheaper sandbox" and row.after["added"] == ["acq_gamma"]
    again = channel_import.import_file(changed, "cli:test")
    assert again["added"] == again["changed"] == [] and len(again["unchanged"]) == 3

    code, out = cli("channels", "import", changed, "--prune", "--reason", "beta gone")
    assert code == 1 and "live rules (version 1) route to" in out and "acq_beta" in out, out  # the default rules
    code, out = cli("channels", "import", with_channel(tmp_path / "three.yaml", "http://127.0.0.1:1"), "--prune")
    assert code == 0 and "removed: acq_gamma" in out, out
    channel_definitions.announce()
    assert channels_runtime.registry().ids() == ["sandbox", "acq_alpha", "acq_beta"]


@pytest.mark.parametrize("broken, said", [
    ({"id": "acq_gamma", "methods": ["upi"], "currencies": ["USD"], "adapter": "nowhere"}, "unknown adapter 'nowhere'"),
    ({**GAMMA, "mode": "live"}, "environment variable ACQ_GAMMA_SECRET is not set"),
    ({**GAMMA, "methods": ["UPI!"]}, "channels[3].methods[0]"),
    ({**GAMMA, "config": {"base_url": "${NOT_SET_ANYWHERE}"}}, "NOT_SET_ANYWHERE is not set"),
])
def test_an_import_this_process_could_not_run_is_refused_whole(stored, tmp_path, broken, said):
    path = with_channel(tmp_path / "bad.yaml", "http://127.0.0.1:1", **broken)
    data = yaml.safe_load(open(path).read())
    data["channels"][0]["cost"] = {"percent": "9.9", "fixed": 1}  # a change that must not land either
    open(path, "w").write(yaml.safe_dump(data))
    code, out = cli("channels", "import", path)
    assert code == 1 and said in out, out
    assert [cid for cid, _ in channel_definitions.rows()] == ["sandbox", "acq_alpha", "acq_beta"]
    assert channel_definitions.items(channel_definitions.rows())[0]["cost"] == {"percent": "2.0", "fixed": 10}


def test_prune_is_refused_while_the_live_rules_route_to_the_channel(stored, tmp_path):
    path = tmp_path / "two.yaml"
    with_channel(path, "http://127.0.0.1:1")
    data = yaml.safe_load(path.read_text())
    data["channels"] = [c for c in data["channels"] if c["id"] != "acq_beta"]  # the default rules route to it
    path.write_text(yaml.safe_dump(data))
    code, out = cli("channels", "import", path, "--prune")
    assert code == 1 and "acq_beta" in out and "live rules" in out, out
    assert "acq_beta" in {cid for cid, _ in channel_definitions.rows()}


def test_prune_is_refused_while_a_merchants_own_live_rules_route_to_the_channel(stored, tmp_path):
    """The platform's rules do not name acq_gamma, a merchant's own set does: pruning it is refused
    naming that merchant, and the channel stays."""
    from app.services import rules_publishing

    merchant_id, _ = builders.merchant("Gamma shop")
    channel_import.import_file(with_channel(tmp_path / "gamma.yaml", "http://127.0.0.1:1", **GAMMA), "cli:test")
    own = ("rules:\n  - id: upi\n    priority: 100\n    when: {fact: payment_method.type, eq: upi}\n"
           "    then: {route: [acq_gamma]}\n")
    rules_publishing.publish(own, "pm", "upi through gamma", merchant=merchant_id)
    code, out = cli("channels", "import", tmp_path / "gamma.yaml", "--prune")  # still lists it: allowed
    assert code == 0, out
    without = tmp_path / "without.yaml"
    data = yaml.safe_load((tmp_path / "gamma.yaml").read_text())
    data["channels"] = [c for c in data["channels"] if c["id"] != "acq_gamma"]
    without.write_text(yaml.safe_dump(data))
    code, out = cli("channels", "import", without, "--prune")
    assert code == 1 and "acq_gamma" in out and merchant_id in out, out
    assert "acq_gamma" in {cid for cid, _ in channel_definitions.rows()}


def test_a_process_that_cannot_build_a_changed_channel_runs_the_others_and_never_its_old_definition(
        stored, tmp_path, monkeypatch):
    """Another process imported a definition this one cannot expand: it runs every other stored
    channel, leaves that one out (and says which and why), and does not keep its older definition:
    a process started later could not have it, and every process must run the same channels."""
    gamma = {**GAMMA, "config": {"base_url": "http://127.0.0.1:3", "secret_env": "ACQ_GAMMA_SECRET"}}
    channel_import.import_file(with_channel(tmp_path / "fixed.yaml", "http://127.0.0.1:1", **gamma), "cli:test")
    channel_definitions.announce()
    before = channels_runtime.registry()
    assert "acq_gamma" in before
    gamma["config"] = {**gamma["config"], "base_url": "${GAMMA_URL}"}
    monkeypatch.setenv("GAMMA_URL", "http://127.0.0.1:1")
    channel_import.import_file(with_channel(tmp_path / "env.yaml", "http://127.0.0.1:1", **gamma), "cli:elsewhere")
    monkeypatch.delenv("GAMMA_URL")
    channel_definitions.announce()
    running = channels_runtime.registry()
    assert running.ids() == ["sandbox", "acq_alpha", "acq_beta"]
    assert all(running.get(cid) is before.get(cid) for cid in running.ids())  # unchanged: the same instances
    state = channels_runtime.state()
    assert state.stale and state.unbuilt == ("acq_gamma",) and state.version == state.stored
    assert state.error.startswith("acq_gamma: ") and "GAMMA_URL is not set" in state.error
    monkeypatch.setenv("GAMMA_URL", "http://127.0.0.1:2")
    channel_import.import_file(with_channel(tmp_path / "env2.yaml", "http://127.0.0.1:1", **gamma, timeout_ms=500),
                               "cli:elsewhere")
    channel_definitions.announce()
    assert channels_runtime.registry().get("acq_gamma").spec.config["base_url"] == "http://127.0.0.1:2"
    assert not channels_runtime.state().stale


def test_methods_are_those_the_channels_declare(stored, client, tmp_path):
    api = builders.api(client)
    refused = api.post("/v1/payments", builders.payment_body(1000, payment_method={"type": "pix"}))
    assert refused.status_code == 400
    assert refused.get_json()["error"]["param"] == "payment_method[type]"
    assert "'pix'" in refused.get_json()["error"]["message"]
    # named as every nested field is (payment_method[brand], customer[id]), and as a top-up's refusal
    # of the same field is: a client maps `param` to its form field by one rule
    wrong_type = api.post("/v1/payments", builders.payment_body(1000, payment_method={"type": 5}))
    assert wrong_type.get_json()["error"]["param"] == refused.get_json()["error"]["param"]
    channel_import.import_file(with_channel(tmp_path / "pix.yaml", "http://127.0.0.1:1",
                                            **{**GAMMA, "methods": ["pix", "upi"]}), "cli:test")
    channel_definitions.announce()
    simulated = api.post("/v1/routing/simulate", builders.payment_body(1000, payment_method={"type": "pix"}))
    assert simulated.status_code == 200, simulated.get_json()
    assert {d["channel"]: d["reason"] for d in simulated.get_json()["dropped"]}.get("sandbox") == "unsupported_method"


def test_a_channel_whose_adapter_takes_no_secret_runs_without_one_even_live(stored, tmp_path):
    keyless = {"id": "keyless", "adapter": f"{__name__}:KeylessChannel", "methods": ["card"], "currencies": ["USD"],
               "operations": ["payment"], "mode": "live", "config": {}}
    path = tmp_path / "keyless.yaml"
    write_channels_file(path, "http://127.0.0.1:1")
    data = yaml.safe_load(path.read_text())
    data["channels"].append(keyless)
    path.write_text(yaml.safe_dump(data))
    done = channel_import.import_file(path, "cli:test")
    assert done["added"] == ["keyless"] and done["generated_channel_secrets"] == []
    channel_definitions.announce()
    assert channels_runtime.registry().get("keyless").secret == ""
    channels_runtime.check_live_channels()  # no refusal: it needs none
    with unit_of_work() as session:
        assert session.get(ChannelSecret, "keyless") is None


def test_a_changed_channel_keeps_its_circuit_and_the_console_shows_who_defined_it(stored, app, tmp_path):
    from app.services import breaker, channels
    from tests.integration.test_admin_console import logged_in

    channels.open_circuit("acq_alpha", "cli:ops", "PSP incident")
    path = tmp_path / "priced.yaml"
    with_channel(path, "http://127.0.0.1:1", **GAMMA, enabled=False)
    data = yaml.safe_load(path.read_text())
    data["channels"][1]["cost"] = {"percent": "1.8", "fixed": 99}  # acq_alpha
    path.write_text(yaml.safe_dump(data))
    done = channel_import.import_file(path, "cli:carol", reason="new price")
    assert done["changed"] == ["acq_alpha"] and done["added"] == ["acq_gamma"]
    channel_definitions.announce()
    assert channels_runtime.registry().get("acq_alpha").spec.cost.fixed == 99
    assert breaker.state("acq_alpha") == "open"  # the circuit opened by hand outlives the new definition

    viewer, _, _ = logged_in(app, "viewer")
    page = viewer.get("/admin/channels/").get_data(as_text=True)
    assert "acq_gamma" in page and "defined by cli:carol" in page and "off in its definition" in page
    code, out = cli("channels", "list", "--json")
    rows = {row["id"]: row for row in json.loads(out)}
    assert code == 0 and rows["acq_gamma"]["defined_by"] == "cli:carol"
    assert rows["acq_gamma"]["defined_enabled"] is False
    assert rows["acq_alpha"]["circuit"]["manual"] is True


def test_a_running_sandbox_serves_a_sandbox_channel_added_by_import_without_a_restart(stored, tmp_path):
    """`payrouter sandbox` (a real process) serves the channels file's channels; `channels import`
    adds acq_gamma (the sandbox adapter): within 2 s the running sandbox serves it, and takes its
    stored secret (an authenticated lookup answers operation_not_found, not unknown_channel)."""
    from tests.live import free_port, process_env, wait_http

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sandbox = subprocess.Popen([sys.executable, "-m", "app", "sandbox", "--port", str(port)],
                               env=process_env(stored, PAYROUTER_CHANNELS=with_channel(tmp_path / "base.yaml", base)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"{base}/healthz", proc=sandbox)
        assert "acq_gamma" not in requests.get(f"{base}/healthz", timeout=5).json()["channels"]
        code, out = cli("channels", "import", with_channel(tmp_path / "gamma.yaml", base, **GAMMA))
        assert code == 0, out
        imported = time.monotonic()
        spec = next(spec for spec in channels_runtime.specs(channel_definitions.rows()) if spec.id == "acq_gamma")
        secret = StoredChannelSecrets()(spec)

        def lookup():
            return requests.get(f"{base}/v1/channels/acq_gamma/operations?reference=nothing", timeout=5,
                                headers={"Authorization": f"Bearer {secret}"})

        def known():  # the answer (in a list: a 4xx Response is falsy), once it is not unknown_channel
            answer = lookup()
            unknown = answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_channel"
            return None if unknown else [answer]

        (answer,) = wait_until(known, timeout=5, interval=0.05, what="the sandbox serving acq_gamma")
        served = time.monotonic()
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "operation_not_found", answer.text
        assert served - imported < 2.0, f"served {served - imported:.2f} s after the import"
        assert "acq_gamma" in requests.get(f"{base}/healthz", timeout=5).json()["channels"]
        wrong = requests.get(f"{base}/v1/channels/acq_gamma/operations?reference=x", timeout=5,
                             headers={"Authorization": "Bearer not-its-secret"})
        assert wrong.status_code == 401
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=15)


def _audited_import() -> dict:
    with read_only() as session:
        return session.scalar(select(AuditLog.after).where(AuditLog.action == "channels.import")
                              .order_by(AuditLog.id.desc()).limit(1))


def test_prune_is_refused_while_the_channel_carries_live_work_unless_forced(stored, tmp_path):
    """#14: --prune removing acq_gamma while a payment on it is processing, another waits for its
    capture and a merchant's channel account is live on it: refused with exit 5 naming the channel
    and the counts, nothing stored; --force removes it, audited with what it stranded."""
    merchant_id, _ = builders.merchant("Gamma shop")
    gamma = with_channel(tmp_path / "gamma.yaml", "http://127.0.0.1:1", **GAMMA)
    assert cli("channels", "import", gamma, "--wait", 0)[0] == 0
    builders.recorded_operation(merchant_id, 1000, channel="acq_gamma", status="processing")
    builders.recorded_operation(merchant_id, 2000, channel="acq_gamma", status="requires_capture")
    builders.recorded_operation(merchant_id, 3000, channel="acq_gamma")  # succeeded: final, not counted
    builders.stored_channel_account(merchant_id, {"api_key": "k"}, channel="acq_gamma")
    three = with_channel(tmp_path / "three.yaml", "http://127.0.0.1:1")

    code, out = cli("channels", "import", three, "--prune", "--wait", 0)
    assert code == 5, out
    assert ("acq_gamma (1 payment processing, 1 payment requires_capture, 1 live merchant channel account(s))"
            in out and "--force" in out and "Nothing was stored" in out), out
    assert "acq_gamma" in {cid for cid, _ in channel_definitions.rows()}

    code, out = cli("channels", "import", three, "--prune", "--force", "--reason", "gamma closed", "--wait", 0)
    assert code == 0 and "removed: acq_gamma" in out and "forced: removed acq_gamma with 2 operation(s)" in out, out
    assert "acq_gamma" not in {cid for cid, _ in channel_definitions.rows()}
    assert _audited_import()["forced"] == [{"channel": "acq_gamma", "operations": {
        "payment processing": 1, "payment requires_capture": 1}, "open_operations": 2, "open_disputes": 0,
        "live_accounts": 1}]


def test_prune_is_refused_while_the_channel_carries_an_open_dispute_unless_forced(stored, tmp_path):
    """#14 (attack a14 M4): a dispute still needs_response on acq_gamma waits for the network's ruling
    by acq_gamma's callback, which a pruned channel answers 404 (a won dispute never reversed): the
    prune is refused with exit 5 naming it, though every payment on the channel is final; a closed
    dispute does not count; --force removes it, audited with it."""
    merchant_id, _ = builders.merchant("Gamma shop")
    gamma = with_channel(tmp_path / "gamma.yaml", "http://127.0.0.1:1", **GAMMA)
    assert cli("channels", "import", gamma, "--wait", 0)[0] == 0
    disputed = builders.recorded_operation(merchant_id, 3000, channel="acq_gamma")  # succeeded: final
    builders.recorded_dispute(merchant_id, disputed, 3000, channel="acq_gamma")
    builders.recorded_dispute(merchant_id, disputed, 1000, channel="acq_gamma", status="won")  # closed
    three = with_channel(tmp_path / "three.yaml", "http://127.0.0.1:1")

    code, out = cli("channels", "import", three, "--prune", "--wait", 0)
    assert code == 5, out
    assert "acq_gamma (1 open dispute(s))" in out and "won dispute never reversed" in out, out
    assert "acq_gamma" in {cid for cid, _ in channel_definitions.rows()}

    code, out = cli("channels", "import", three, "--prune", "--force", "--wait", 0)
    assert code == 0 and "forced: removed acq_gamma with 0 operation(s) not final, 1 open dispute(s)" in out, out
    assert _audited_import()["forced"] == [{"channel": "acq_gamma", "operations": {}, "open_operations": 0,
                                            "open_disputes": 1, "live_accounts": 0}]


def test_a_host_change_under_live_merchant_accounts_needs_allow_host_change(stored, tmp_path):
    """#14: an import moving acq_alpha (a merchant's channel account live on it) to another host is
    refused with exit 6 naming the channel and both hosts; acq_beta (no account) may move, and the
    output says it did; --allow-host-change moves acq_alpha, audited."""
    merchant_id, _ = builders.merchant("Alpha shop")
    builders.stored_channel_account(merchant_id, {"api_key": "k"}, channel="acq_alpha")
    moved = tmp_path / "moved.yaml"
    with_channel(moved, "http://127.0.0.1:1")
    data = yaml.safe_load(moved.read_text())
    for item in data["channels"]:
        if item["id"] in ("acq_alpha", "acq_beta"):
            item["config"]["base_url"] = "https://psp.example:8443/v2"
    moved.write_text(yaml.safe_dump(data, sort_keys=False))

    code, out = cli("channels", "import", moved, "--wait", 0)
    assert code == 6, out
    assert "acq_alpha: http://127.0.0.1:1 -> https://psp.example:8443 (1 live merchant channel account(s)" in out
    assert "--allow-host-change" in out and "acq_beta" not in out, out
    assert "127.0.0.1:1" in channel_definitions.items(channel_definitions.rows())[1]["config"]["base_url"]

    code, out = cli("channels", "import", moved, "--allow-host-change", "--wait", 0)
    assert code == 0, out
    assert "host: acq_alpha http://127.0.0.1:1 -> https://psp.example:8443 (1 live merchant channel account(s))" in out
    assert "host: acq_beta http://127.0.0.1:1 -> https://psp.example:8443\n" in out
    assert {change["channel"]: change["live_accounts"] for change in _audited_import()["host_changes"]} == {
        "acq_alpha": 1, "acq_beta": 0}
