"""Schemathesis against the live server: every operation of /openapi.json, with cases generated
from the document (valid and invalid), over real HTTP with a merchant's key. Checks: no 5xx, and
every response matches the schema the document gives for its status.

`make test` runs a few fixed-seed cases per operation; `make fuzz` runs many more, with
schemathesis's boundary-value (coverage) phase too, on whichever backend the environment names:
PAYROUTER_FUZZ_EXAMPLES cases per operation, PAYROUTER_FUZZ_COVERAGE=1, PAYROUTER_FUZZ_SEED.
"""
from __future__ import annotations

import collections
import itertools
import os
import re
import threading

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from werkzeug.serving import make_server

from app import channels_runtime
from app.config import set_config
from app.redis_conn import get_redis
from channels.sandbox.server import SandboxServer
from channels.sandbox.testing import FAST_SANDBOX_OPTIONS, write_channels_file
from tests import builders
from tests.conftest import _clean_database, _reset_process_caches, assert_ledger_balanced

EXAMPLES = int(os.environ.get("PAYROUTER_FUZZ_EXAMPLES", "8"))
SEED = int(os.environ.get("PAYROUTER_FUZZ_SEED", "20261206"))
COVERAGE = os.environ.get("PAYROUTER_FUZZ_COVERAGE", "0") == "1"
CHECKS = [not_a_server_error, response_schema_conformance]
seen: collections.Counter = collections.Counter()
VALID_KEY = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
KEYS = itertools.count()


def _document() -> dict:
    """The document the server serves (every resource module imported first: each adds its routes)."""
    from app.api import accounts, events, openapi, payments, routing, transfers, webhooks  # noqa: F401

    return openapi.document()


schema = schemathesis.openapi.from_dict(_document(), config=schemathesis.Config.from_dict(
    {"seed": SEED, "phases": {"coverage": {"enabled": COVERAGE}}}))


@pytest.fixture(scope="module")
def live(config, tmp_path_factory, request):
    """One API server (and sandbox PSP) for every operation's cases, with a merchant that has
    something to list: two accounts (one funded), a transfer, a payment and its events."""
    from app.web import create_app
    from rules.store import seed_default_rules

    set_config(config)
    _clean_database(config)
    get_redis(config).flushdb()
    _reset_process_caches()
    channels_file = write_channels_file(tmp_path_factory.mktemp("fuzz") / "channels.yaml", "http://127.0.0.1:1")
    sandbox = SandboxServer("127.0.0.1", 0, channels_file, **FAST_SANDBOX_OPTIONS)
    write_channels_file(channels_file, sandbox.url)
    app = create_app(config.with_(channels_file=channels_file))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    set_config(config.with_(channels_file=channels_file, public_url=f"http://127.0.0.1:{server.server_port}"))
    channels_runtime.reset()
    seed_default_rules()
    sandbox.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = builders.api(app.test_client())
        funded, other = api.account(funded=10_000), api.account()
        assert api.post("/v1/transfers", api.transfer_body(funded["id"], other["id"], 100)).status_code == 201
        assert api.post("/v1/payments", builders.payment_body(500)).status_code == 201
        yield f"http://127.0.0.1:{server.server_port}", api.headers()
    finally:
        server.shutdown()
        server.server_close()
        sandbox.stop()
        set_config(config)
        channels_runtime.reset()
        get_redis(config).flushdb()
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():  # the figures make fuzz reports, shown with -q too
            print(f"\nfuzz: {sum(seen.values())} cases, seed {SEED}, statuses {dict(sorted(seen.items()))}")
    assert_ledger_balanced(config)


@schema.parametrize()
@settings(max_examples=EXAMPLES, database=None, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
def test_the_api_answers_as_documented(case, live):
    base_url, headers = live
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.fullmatch(key):
        # Generated keys repeat ("0", "00"…): each would answer 422 for another body and little would be
        # created. A valid key stays valid and gets unique; invalid ones are sent as generated.
        case.headers["Idempotency-Key"] = f"{next(KEYS)}-{key}"[:255].rstrip()
    response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)
    seen[response.status_code] += 1
