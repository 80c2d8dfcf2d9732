"""End-to-end fixtures: a real headless Chromium (Playwright) against a live stack — the real app
factory on a threaded server, the sandbox PSP, and a `payrouter worker` process — on free ports.

- One browser per session (pytest-playwright's ``browser``), Chromium from /usr/bin/chromium
  (``apt-get install -y chromium``); without it every test here is skipped, saying so.
- ``live``: the stack, started once for tests/e2e and stopped when they are done (its worker must
  not take the jobs of the tests that follow). The database is emptied once, at its start: tests
  make their own objects (``unique`` names) and undo what they switch (``live.reset_switches``
  runs before each test anyway).
- ``make_user(role)``: a console user of that role (unique name; password ``PASSWORD``);
  ``login(page, role)`` logs a new user of that role in through the log-in page and returns its name.
- ``live.api``: a merchant's API client over HTTP (requests) with a fresh key.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from tests.builders import unique

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"
ROLES = ("viewer", "ops", "pm", "admin")


@pytest.fixture(scope="session")
def browser_type_launch_args():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` (CI does)")
    return {"executable_path": CHROMIUM, "headless": True,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]}


@pytest.fixture(scope="session")
def browser_name():
    return "chromium"


class BaseUrlSession(requests.Session):
    """A requests session that takes paths, so tests.builders.Api drives the live server over HTTP."""

    def __init__(self, base: str):
        super().__init__()
        self.base = base

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", 10)
        return super().request(method, self.base + url, *args, **kwargs)


class Live:
    def __init__(self, config, server, sandbox, worker: subprocess.Popen):
        self.config, self.server, self.sandbox, self.worker = config, server, sandbox, worker
        self.url = config.public_url
        self.admin_url = self.url + "/admin"

    def serve(self, config) -> None:
        """An app holding ``config`` answers at ``url`` from now on (``_e2e_state`` serves the stack's own
        again before each test)."""
        from tests.conftest import app_for

        self.server.app = app_for(config)

    def api(self, name: str = "Shop"):
        """A new merchant and its API client."""
        from tests import builders

        merchant_id, secret = builders.merchant(name)
        return builders.Api(BaseUrlSession(self.url), secret, merchant_id)

    def reset_switches(self) -> None:
        from sqlalchemy import delete

        from app.adapters.db import unit_of_work
        from app.adapters.models import Switch
        from app.services import switches

        with unit_of_work() as session:
            session.execute(delete(Switch))
        switches.announce()


def _worker_env(config) -> dict:
    from tests.live import process_env

    return process_env(config, PAYROUTER_CHANNELS=config.channels_file, PAYROUTER_PUBLIC_URL=config.public_url,
                       PAYROUTER_STATUS_QUERY_DELAYS=",".join(map(str, config.status_query_delays)),
                       PAYROUTER_ALLOW_PRIVATE_WEBHOOKS="1", PAYROUTER_RECONCILE_INTERVAL="0")


@pytest.fixture(scope="package")
def live(config, tmp_path_factory):
    from app.adapters import channels_runtime, redis_conn
    from app.adapters.channel_secrets import StoredChannelSecrets
    from app.config import scoped
    from app.services.rules_store import seed_default_rules
    from channels.sandbox.server import SandboxServer
    from channels.sandbox.testing import FAST_SANDBOX_OPTIONS, write_channels_file
    from tests.conftest import _clean_database, _reset_process_caches, app_for
    from tests.live import stop

    _clean_database(config)
    redis_conn.get_redis(config).flushdb()
    _reset_process_caches()
    channels_file = write_channels_file(tmp_path_factory.mktemp("e2e") / "channels.yaml", "http://127.0.0.1:1")
    sandbox = SandboxServer("127.0.0.1", 0, channels_file, stored=StoredChannelSecrets(), **FAST_SANDBOX_OPTIONS)
    write_channels_file(channels_file, sandbox.url, timeout_ms=400)
    server = make_server("127.0.0.1", 0, None, threaded=True)
    live_config = config.with_(channels_file=channels_file, status_query_delays=(1, 1, 2), allow_private_webhooks=True,
                               reconcile_interval=0, public_url=f"http://127.0.0.1:{server.server_port}")
    channels_runtime.reset()
    with scoped(live_config):  # the tests' own code (merchants, users, switches, rules) on the stack's config
        server.app = app_for(live_config)
        seed_default_rules()
        sandbox.start()
        thread = threading.Thread(target=server.serve_forever, name="e2e-server", daemon=True)
        thread.start()
        worker = subprocess.Popen([sys.executable, "-m", "app", "worker"], env=_worker_env(live_config),
                                  stdout=subprocess.DEVNULL, stderr=None if os.environ.get("E2E_WORKER_LOG") else
                                  subprocess.DEVNULL)
        try:
            yield Live(live_config, server, sandbox, worker)
        finally:
            stop(worker)
            server.shutdown()
            server.server_close()
            sandbox.stop()
            channels_runtime.reset()
            _reset_process_caches()


@pytest.fixture(autouse=True)
def _e2e_state(request):
    """Before each e2e test: the live stack's own app served, every switch off."""
    if "live" not in request.fixturenames:
        yield
        return
    stack = request.getfixturevalue("live")
    stack.serve(stack.config)
    stack.reset_switches()
    yield


@pytest.fixture(autouse=True)
def _short_timeouts(request):
    """A journey that waits, waits 10 s at most (Playwright's default is 30)."""
    if "page" in request.fixturenames:
        from playwright.sync_api import expect

        request.getfixturevalue("page").set_default_timeout(10_000)
        expect.set_options(timeout=5_000)
    yield


@pytest.fixture
def make_user(live):
    """``make_user("pm")`` → a new console user of that role (password ``PASSWORD``); its name."""
    from app.services import admin_users

    def make(role: str, password: str = PASSWORD) -> str:
        assert role in ROLES, role
        name = unique(role)
        admin_users.create_user(name, password, role, actor="e2e")
        return name

    return make


@pytest.fixture
def login(live, make_user):
    """``login(page, "ops")``: a new user of that role logged in on ``page``; returns the user name."""

    def do(page, role: str) -> str:
        name = make_user(role)
        page.goto(live.admin_url + "/login/")
        page.get_by_label("Username").fill(name)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(live.admin_url + "/")
        return name

    return do
