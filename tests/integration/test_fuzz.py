"""Schemathesis against the live server: every operation of /openapi.json, with cases generated
from the document (valid and invalid), over real HTTP with a merchant's key. Checks: no 5xx, and
every response matches the schema the document gives for its status.

`make test` runs a few fixed-seed cases per operation; `make fuzz` runs many more, with
schemathesis's boundary-value (coverage) phase too, on whichever backend the environment names:
PAYROUTER_FUZZ_EXAMPLES cases per operation, PAYROUTER_FUZZ_COVERAGE=1, PAYROUTER_FUZZ_SEED.
"""
from __future__ import annotations

import collections
import functools
import itertools
import json
import os
import re
import threading
from urllib.parse import quote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from werkzeug.serving import make_server

from app.adapters import channels_runtime
from app.adapters.channel_secrets import StoredChannelSecrets
from app.adapters.redis_conn import get_redis
from app.config import scoped
from channels.sandbox.server import SandboxServer
from channels.sandbox.testing import FAST_SANDBOX_OPTIONS, write_channels_file
from tests import builders
from tests.conftest import _clean_database, _reset_process_caches, app_for, assert_ledger_balanced

EXAMPLES = int(os.environ.get("PAYROUTER_FUZZ_EXAMPLES", "8"))
SEED = int(os.environ.get("PAYROUTER_FUZZ_SEED", "20261206"))
COVERAGE = os.environ.get("PAYROUTER_FUZZ_COVERAGE", "0") == "1"
CHECKS = [not_a_server_error, response_schema_conformance]
seen: collections.Counter = collections.Counter()
VALID_KEY = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
KEYS = itertools.count()
ALTERNATE = itertools.count()


def _document() -> dict:
    """The document the server serves."""
    from app.entrypoints.api import openapi

    return openapi.document()


schema = schemathesis.openapi.from_dict(_document(), config=schemathesis.Config.from_dict(
    {"seed": SEED, "phases": {"coverage": {"enabled": COVERAGE}}}))


@pytest.fixture(scope="module")
def live(config, tmp_path_factory, request):
    """One API server (and sandbox PSP) for every operation's cases, with a merchant that has
    something to list: two accounts (one funded), a transfer, a payment and its events."""
    from app.services.rules_store import seed_default_rules

    _clean_database(config)
    get_redis(config).flushdb()
    _reset_process_caches()
    channels_file = write_channels_file(tmp_path_factory.mktemp("fuzz") / "channels.yaml", "http://127.0.0.1:1")
    sandbox = SandboxServer("127.0.0.1", 0, channels_file, stored=StoredChannelSecrets(), **FAST_SANDBOX_OPTIONS)
    write_channels_file(channels_file, sandbox.url)
    # Endpoints on loopback are allowed so that generated ones get created: _with_real_ids points each
    # at a closed loopback port, so no delivery ever leaves this machine.
    server = make_server("127.0.0.1", 0, None, threaded=True)
    fuzz_config = config.with_(channels_file=channels_file, allow_private_webhooks=True,
                               public_url=f"http://127.0.0.1:{server.server_port}")
    channels_runtime.reset()
    server.app = app = app_for(fuzz_config)
    with scoped(fuzz_config):  # the module's own code (builders, the rules seeded) under it too
        seed_default_rules()
        sandbox.start()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            api = builders.api(app.test_client())
            funded, other = api.account(funded=10_000_000), api.account()
            transfer = api.post("/v1/transfers", api.transfer_body(funded["id"], other["id"], 100))
            payment = api.post("/v1/payments", builders.payment_body(500))
            assert (transfer.status_code, payment.status_code) == (201, 201)
            event = api.get("/v1/events?limit=1").get_json()["data"][0]
            endpoint = api.post("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]})
            assert endpoint.status_code == 201, endpoint.get_json()
            ids = {"acct": funded["id"], "to_account": other["id"], "tr": transfer.get_json()["id"],
                   "pay": payment.get_json()["id"], "evt": event["id"], "we": endpoint.get_json()["id"]}
            yield f"http://127.0.0.1:{server.server_port}", api.headers(), ids
        finally:
            server.shutdown()
            server.server_close()
            sandbox.stop()
            channels_runtime.reset()
            get_redis(config).flushdb()
            capture = request.config.pluginmanager.get_plugin("capturemanager")
            with capture.global_and_fixture_disabled():  # the figures make fuzz reports, shown with -q too
                print(f"\nfuzz: {sum(seen.values())} cases, seed {SEED}, statuses {dict(sorted(seen.items()))}")
    assert_ledger_balanced(config)


# The one-value parametrize gives each operation's test its own node id (…[GET /v1/accounts][api]): under
# pytest 9.2 schemathesis's items otherwise all share the function's, and pytest-xdist, which hands tests
# to its workers by node id, would run one of them.
@schema.parametrize()
@pytest.mark.parametrize("surface", ["api"])
@settings(max_examples=EXAMPLES, database=None, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
def test_the_api_answers_as_documented(case, live, surface):
    base_url, headers, ids = live
    _with_real_ids(case, ids)
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.fullmatch(key):
        # Generated keys repeat ("0", "00"…): each would answer 422 for another body and little would be
        # created. A valid key stays valid and gets unique; invalid ones are sent as generated.
        case.headers["Idempotency-Key"] = f"{next(KEYS)}-{key}"[:255].rstrip()
    response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)
    seen[response.status_code] += 1


# Which seeded object a path's {id} or a body's reference to another object may name.
PATH_KINDS = {"accounts": "acct", "test_helpers": "acct", "transfers": "tr", "payments": "pay", "events": "evt",
              "webhook_endpoints": "we"}
BODY_KINDS = {"account": "acct", "from_account": "acct", "to_account": "to_account", "payment": "pay"}


def _with_real_ids(case, ids: dict) -> None:
    """Every other case names objects that exist (a generated id is never found, so without this
    nothing past the lookup of an id would be fuzzed: transfers, top-ups, refunds, entries…).
    Every webhook endpoint URL, whatever its host, is sent to a closed port on loopback."""
    if isinstance(case.body, dict) and isinstance(case.body.get("url"), str):
        authority = re.match(r"https?://[^/?#]*", case.body["url"])
        if authority:
            case.body["url"] = "http://127.0.0.1:9" + case.body["url"][authority.end():]
    if next(ALTERNATE) % 2:
        return
    segments = case.operation.path.split("/")
    kind = PATH_KINDS.get(segments[2]) if len(segments) > 2 else None
    if kind and isinstance(case.path_parameters, dict) and "id" in case.path_parameters:
        case.path_parameters["id"] = ids[kind]
    if isinstance(case.body, dict):
        for field, kind in BODY_KINDS.items():
            if isinstance(case.body.get(field), str):
                case.body[field] = ids[kind]


BAD_STRINGS = {"NUL": "a\x00b", "unpaired surrogate": "a\ud800b"}
BAD_NUMBERS = ["1e999", "1e99999999999999999999", "18446744073709551616", "-0.5e-99999999999999999999",
               "1" + "0" * 5000]


def _operations():
    for path, item in _document()["paths"].items():
        for method, op in item.items():
            yield method, path, op


def _body_fields(op) -> list[tuple[str, str]]:
    """(field, JSON type) of every top-level property of the operation's request body."""
    body = op.get("requestBody")
    if not body:
        return []
    name = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = _document()["components"]["schemas"][name]["properties"]
    return [(field, spec.get("type", "object")) for field, spec in properties.items()]


@pytest.mark.parametrize("method,path", [(m, p) for m, p, _ in _operations()], ids=lambda v: str(v))
def test_bad_text_and_numbers_in_every_documented_place_are_400(live, method, path):
    """Schemathesis generates text a codec can encode, so this sweeps the rest: a NUL or an unpaired
    surrogate in every body field, path id and query parameter of every operation, a number no
    64-bit column holds in every numeric field, each answered 400 parameter_invalid naming it."""
    base_url, headers, _ids = live
    op = dict(_operations_by_key()[(method, path)])
    sent = []
    for label, bad in BAD_STRINGS.items():
        if "{id}" in path:
            raw = quote(bad.encode("utf-8", "surrogatepass"), safe="")
            sent.append((label, "id", path.replace("{id}", raw), b"", None))
        for param in (p["name"] for p in op["parameters"] if p["in"] == "query"):
            query = quote(bad.encode("utf-8", "surrogatepass"), safe="")
            sent.append((label, param, path.replace("{id}", "x_1") + f"?{param}={query}", b"", None))
        for field, kind in _body_fields(op):
            escaped = json.dumps(bad)  # "\u0000" and "\ud800" as JSON escapes
            body = ('{"%s": %s}' % (field, escaped if kind == "string" else '{"k": %s}' % escaped)).encode()
            sent.append((label, field if kind == "string" else f"{field}[k]", path.replace("{id}", "x_1"), body, None))
            if kind == "string":  # the raw bytes of a surrogate, not an escape: not UTF-8 at all
                raw_body = b'{"%s": "a\xed\xa0\x80b"}' % field.encode()
                sent.append(("raw surrogate bytes", None, path.replace("{id}", "x_1"), raw_body, "invalid_json"))
    for field, kind in _body_fields(op):
        if kind == "integer":
            for number in BAD_NUMBERS:
                sent.append((number[:12], field, path.replace("{id}", "x_1"), b'{"%s": %s}' % (
                    field.encode(), number.encode()), None))
    for label, param, url, body, code in sent:
        request_headers = {**headers, "Idempotency-Key": f"bad-{next(KEYS)}", "Content-Type": "application/json"}
        response = requests.request(method.upper(), base_url + url, data=body or None, headers=request_headers,
                                    timeout=30)
        assert response.status_code == 400, (label, url, body[:80], response.status_code, response.text[:300])
        error = response.json()["error"]
        assert error["code"] == (code or "parameter_invalid"), (label, url, body[:80], error)
        if param is not None:
            assert error["param"] == param, (label, url, body[:80], error)


@functools.cache
def _operations_by_key() -> dict:
    return {(m, p): op for m, p, op in _operations()}
