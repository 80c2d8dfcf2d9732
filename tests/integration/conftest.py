"""The payment stack for integration tests: the sandbox PSP and the API over real HTTP,
a real RQ worker on the test's Redis, and the rules published as by `payrouter init`."""
from __future__ import annotations

import io
import logging
import threading
import time

import pytest
import yaml
from rq import Queue, SimpleWorker
from werkzeug.serving import make_server

from app.adapters import channels_runtime, jobs
from app.adapters.channel_secrets import StoredChannelSecrets
from app.adapters.logs import JsonFormatter
from app.adapters.redis_conn import get_redis
from app.config import APP_EXTENSION
from app.services import switches
from channels.sandbox.server import SandboxServer
from channels.sandbox.testing import FAST_SANDBOX_OPTIONS, write_channels_file
from tests import builders
from tests.webhook_support import Receiver, webhook_config


class Stack:
    def __init__(self, configure, server, sandbox_url: str, sandbox=None):
        self._configure, self.server, self.sandbox_url = configure, server, sandbox_url
        self.api_url = f"http://127.0.0.1:{server.server_port}"
        self.sandbox = sandbox  # the SandboxServer: a test may make the PSP forget an operation (its store)

    def serve(self, config) -> None:
        """From now on, an app holding ``config`` answers at ``api_url`` and through ``client``, and the
        test's own code (workers, sweeps, builders) runs under it (the ``configured`` fixture)."""
        self.config = config
        app = self._configure(config)
        self.server.app = app  # werkzeug's server hands each request to its ``app`` of the moment
        self.client = app.test_client()

    def work(self, rounds: int = 1) -> None:
        """Sweep (re-queue due status queries and stored callbacks) and run the core queue dry."""
        from app.services import callbacks

        for _ in range(rounds):
            callbacks.sweep()
            worker = SimpleWorker([Queue(jobs.CORE, connection=get_redis())], connection=get_redis())
            worker.work(burst=True)

    def settle(self, api, path: str, timeout: float = 10.0, want=("succeeded", "failed")) -> dict:
        """Run the worker until the object at ``path`` reaches a final status."""
        deadline = time.monotonic() + timeout
        while True:
            self.work()
            obj = api.get(path).get_json()
            if obj["status"] in want or time.monotonic() > deadline:
                return obj
            time.sleep(0.2)

    def dispute_of(self, api, payment_id: str, timeout: float = 15.0) -> dict:
        """The payment's dispute (sandbox row 58), once the sandbox has reported it and the worker
        applied its callback."""
        from tests.support import wait_until

        def reported():
            self.work()
            return api.get(f"/v1/disputes?payment={payment_id}").get_json()["data"]

        found = wait_until(reported, timeout=timeout, what=f"a dispute of {payment_id}")
        assert len(found) == 1, found
        return found[0]


@pytest.fixture
def stack(clean, tmp_path, configured):
    """Sandbox PSP + API server on free ports, channels pointing at the sandbox, rules published: an
    app of its own (the run's config with the channels file, the public URL and fast status queries)."""
    from app.services.rules_store import seed_default_rules

    # Both servers bind port 0 and report the port they got: no window for another process to take it.
    channels_file = write_channels_file(tmp_path / "channels.yaml", "http://127.0.0.1:1", timeout_ms=400)
    sandbox = SandboxServer("127.0.0.1", 0, channels_file, stored=StoredChannelSecrets(), **FAST_SANDBOX_OPTIONS)
    sandbox_url = sandbox.url
    write_channels_file(channels_file, sandbox_url, timeout_ms=400)  # the router's view: where the sandbox is
    server = make_server("127.0.0.1", 0, None, threaded=True)  # its app: stack.serve
    channels_runtime.reset()
    stack = Stack(configured, server, sandbox_url, sandbox)
    stack.serve(clean.with_(channels_file=channels_file, public_url=stack.api_url, status_query_delays=(1, 1, 2)))
    builders.store_channels()  # exactly this file's channels stored (the router reads them from the database)
    seed_default_rules()
    sandbox.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stack
    finally:
        server.shutdown()
        server.server_close()
        sandbox.stop()
        channels_runtime.reset()


@pytest.fixture
def live(clean):
    """The database as `payrouter init` leaves it: the default rules published as version 1."""
    from app.entrypoints.bootstrap import init
    from app.services import rules_runtime

    assert init()["rules_version"] == 1
    rules_runtime.reset()
    return 1


def channels_file_with(path, base_url: str, **overrides) -> None:
    """Rewrite one test channels file: overrides maps a channel id to config changes."""
    data = yaml.safe_load(path.read_text())
    for channel in data["channels"]:
        channel["config"].update(overrides.get(channel["id"], {}))
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def run_without(stack: Stack, tmp_path, channel_id: str):
    """This process (the stack's app and the test's own code) runs every stored channel but
    ``channel_id``, as a process whose environment lacks the variable its stored ``base_url`` names
    (``${<CHANNEL>_URL_HERE}``; stored from a CLI that has it, as `channels import` does). Returns
    a function that makes it a process that has the variable (the channel runs again)."""
    import os

    variable, path = f"{channel_id.upper()}_URL_HERE", tmp_path / f"{channel_id}_from_env.yaml"
    with_variable = stack.config.with_(channel_env={**os.environ, variable: stack.sandbox_url})
    without = stack.config
    path.write_text(open(stack.config.channels_file).read())
    channels_file_with(path, stack.sandbox_url, **{channel_id: {"base_url": "${" + variable + "}"}})
    stack.serve(with_variable)
    builders.store_channels(path)
    channels_runtime.reset()  # a process of another environment: it builds the stored definitions afresh
    stack.serve(without)
    assert channel_id not in channels_runtime.registry()

    def back() -> None:
        channels_runtime.reset()
        stack.serve(with_variable)
        assert channel_id in channels_runtime.registry()

    return back


@pytest.fixture
def receiver():
    made = []

    def make(*args, **kwargs) -> Receiver:
        made.append(Receiver(*args, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def wh_app(clean, configured):
    """An app (and the test's own code) with webhooks to local receivers, retried at once."""
    switches.reset_cache()
    yield configured(webhook_config(clean))
    switches.reset_cache()


@pytest.fixture
def wh_config(wh_app):
    return wh_app.extensions[APP_EXTENSION]


@pytest.fixture
def wh_client(wh_app):
    return wh_app.test_client()


@pytest.fixture
def statement(clean, monkeypatch):
    """A channel ``srv`` whose statement the test writes (test_reconcile_streaming.Statement), served
    over HTTP; the CLI finds it."""
    from app.services import reconcile as recon
    from channels.config import ChannelSpec
    from channels.sandbox.adapter import SandboxChannel
    from tests.integration.test_reconcile_streaming import COST, Statement

    served = Statement()
    spec = ChannelSpec(id="srv", adapter="sandbox", methods=("card",), currencies=("USD",), operations=("payment",),
                       cost=COST, timeout_ms=5000, config={"base_url": served.url})
    adapter = SandboxChannel(spec, "x" * 32)
    real = recon.channel
    monkeypatch.setattr(recon, "channel", lambda cid: adapter if cid == "srv" else real(cid))
    yield served
    served.server.shutdown()


@pytest.fixture
def json_log():
    """The JSON log output (app.adapters.logs.JsonFormatter) of everything logged during the test:
    where a secret must not appear either."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
