"""Test and live modes (contract §1, §4): a key sees and makes only objects of its mode, routes
only to channels of its mode, and no process starts with a live channel lacking its secret."""
from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from app.adapters import channels_runtime
from app.entrypoints import worker
from app.entrypoints.cli import main
from app.entrypoints.web import create_app
from channels.config import ChannelConfigError
from tests import builders
from tests.webhook_support import create_endpoint, transfer

LIVE_SECRET_ENV = "ACQ_ALPHA_SECRET"


def _live_key(api: builders.Api) -> builders.Api:
    """A sk_live_ key of the same merchant, made as an operator does (``merchant new-key --live``)."""
    result = CliRunner().invoke(main, ["merchant", "new-key", api.merchant_id, "--live"])
    assert result.exit_code == 0, result.output
    secret = result.output.split("secret key (shown once): ")[1].strip()
    assert secret.startswith("sk_live_")
    return builders.Api(api.client, secret, api.merchant_id)


def _not_found(response, param: str = "id") -> None:
    assert response.status_code == 404, response.get_json()
    assert response.get_json()["error"]["param"] == param


def test_accounts_and_transfers_of_one_mode_answer_404_to_the_other(client):
    test = builders.api(client)
    live = _live_key(test)
    test_account, live_account = test.account(funded=1_000), live.account(funded=1_000)
    assert test_account["livemode"] is False and live_account["livemode"] is True
    for api, other in ((test, live_account), (live, test_account)):
        _not_found(api.get(f"/v1/accounts/{other['id']}"))
        _not_found(api.get(f"/v1/accounts/{other['id']}/entries"))
    assert [a["id"] for a in live.get("/v1/accounts").get_json()["data"]] == [live_account["id"]]
    assert [a["id"] for a in test.get("/v1/accounts").get_json()["data"]] == [test_account["id"]]

    # Named in a body: a transfer between the two modes finds no account of the other.
    second_live = live.account()
    _not_found(live.post("/v1/transfers", live.transfer_body(live_account["id"], test_account["id"], 10)),
               "to_account")
    _not_found(test.post("/v1/transfers", test.transfer_body(live_account["id"], test_account["id"], 10)),
               "from_account")
    moved = live.post("/v1/transfers", live.transfer_body(live_account["id"], second_live["id"], 10))
    assert moved.status_code == 201 and moved.get_json()["livemode"] is True
    _not_found(test.get(f"/v1/transfers/{moved.get_json()['id']}"))
    assert test.get("/v1/transfers").get_json()["data"] == []
    assert test.get(f"/v1/accounts/{test_account['id']}").get_json()["balance"]["available"] == 1_000
    entries = live.get(f"/v1/accounts/{live_account['id']}/entries").get_json()["data"]
    assert len(entries) == 2 and all(e["livemode"] is True for e in entries)

    # Its event too: each key lists the events of its mode only.
    live_events = live.get("/v1/events").get_json()["data"]
    assert [(e["type"], e["livemode"]) for e in live_events] == [("transfer.succeeded", True)]
    assert test.get("/v1/events").get_json()["data"] == []
    _not_found(test.get(f"/v1/events/{live_events[0]['id']}"))


def test_an_idempotency_key_used_in_one_mode_is_refused_in_the_other(client):
    test = builders.api(client)
    live = _live_key(test)
    body = {"currency": "USD", "customer": {"id": "cus_1"}}
    made = test.post("/v1/accounts", body, key="same-key")
    assert made.status_code == 201
    again = live.post("/v1/accounts", body, key="same-key")  # never the test account replayed to a live key
    assert again.status_code == 422 and again.get_json()["error"]["type"] == "idempotency_error"
    assert "Idempotent-Replayed" not in again.headers
    assert live.get("/v1/accounts").get_json()["data"] == []


def test_events_go_only_to_endpoints_of_their_mode(wh_client):
    from app.adapters.webhook_models import WebhookDelivery
    from app.services.webhooks import relay

    test = builders.api(wh_client)
    live = _live_key(test)
    test_hook = create_endpoint(test, "http://127.0.0.1:9/test")
    live_hook = create_endpoint(live, "http://127.0.0.1:9/live")
    assert test_hook["livemode"] is False and live_hook["livemode"] is True
    _not_found(live.get(f"/v1/webhook_endpoints/{test_hook['id']}"))
    assert [e["id"] for e in live.get("/v1/webhook_endpoints").get_json()["data"]] == [live_hook["id"]]
    transfer(test)
    transfer(live)
    relay.relay_events()
    from app.adapters.db import unit_of_work
    from app.adapters.models import Event

    with unit_of_work() as session:
        sent = {(session.get(Event, d.event_id).livemode, d.endpoint_id, d.livemode)
                for d in session.query(WebhookDelivery)}
    assert sent == {(False, test_hook["id"], False), (True, live_hook["id"], True)}
    live_event = live.get("/v1/events").get_json()["data"][0]
    deliveries = live.get(f"/v1/events/{live_event['id']}/deliveries").get_json()["data"]
    assert [(d["webhook_endpoint"], d["livemode"]) for d in deliveries] == [(live_hook["id"], True)]
    _not_found(test.get(f"/v1/events/{live_event['id']}/deliveries"))
    _not_found(test.post(f"/v1/events/{live_event['id']}/redeliver", {}))


def test_a_live_payment_with_only_test_channels_is_no_route(stack):
    test = builders.api(stack.client)
    live = _live_key(test)
    refused = live.post("/v1/payments", builders.payment_body(1000))
    assert refused.status_code == 402, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "no_route" and error["decision"]["dropped"] == [{"channel": "sandbox", "reason": "mode"}]
    assert live.get("/v1/payments").get_json()["data"] == []
    simulated = live.post("/v1/routing/simulate", builders.payment_body(1000)).get_json()
    assert simulated["outcome"] == "decline" and simulated["decline_code"] == "no_route"
    assert test.post("/v1/routing/simulate", builders.payment_body(1000)).get_json()["channel"] == "sandbox"


def test_rules_simulate_live_considers_only_live_channels(clean, tmp_path):
    import json
    from pathlib import Path

    import rules

    payload = tmp_path / "payment.json"
    payload.write_text(json.dumps(builders.payment_body(1000)))
    rules_file = str(Path(rules.__file__).parent / "default_rules.yaml")
    as_test = CliRunner().invoke(main, ["rules", "simulate", rules_file, str(payload)])
    assert as_test.exit_code == 0 and json.loads(as_test.output)["channel"] == "sandbox", as_test.output
    as_live = CliRunner().invoke(main, ["rules", "simulate", rules_file, str(payload), "--live"])
    assert as_live.exit_code == 0, as_live.output
    decision = json.loads(as_live.output)
    assert decision["decline_code"] == "no_route" and decision["dropped"] == [{"channel": "sandbox", "reason": "mode"}]


def test_a_test_payment_answers_404_to_a_live_key_also_when_refunded(stack):
    test = builders.api(stack.client)
    live = _live_key(test)
    payment = test.post("/v1/payments", builders.payment_body(1000)).get_json()
    assert payment["status"] == "succeeded" and payment["livemode"] is False
    _not_found(live.get(f"/v1/payments/{payment['id']}"))
    assert live.get("/v1/payments").get_json()["data"] == []
    _not_found(live.post("/v1/refunds", {"payment": payment["id"], "reference": builders.unique("re")}), "payment")
    refund = test.post("/v1/refunds", {"payment": payment["id"], "reference": builders.unique("re")}).get_json()
    assert refund["status"] == "succeeded" and refund["livemode"] is False


@pytest.fixture
def live_alpha(monkeypatch):
    """acq_alpha's secret in its environment variable, set before the sandbox and router read it."""
    monkeypatch.setenv(LIVE_SECRET_ENV, "live-secret-given-by-the-operator-0123456789")


def _set_modes(path, store: bool = True, **modes) -> None:
    """Rewrite the channels file with these modes, and (``store``) import it as the router's channels."""
    data = yaml.safe_load(path.read_text())
    for channel in data["channels"]:
        if channel["id"] in modes:
            channel["mode"] = modes[channel["id"]]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if store:
        builders.store_channels(path)


def test_a_live_channel_with_its_secret_carries_live_payments_and_only_them(live_alpha, stack):
    _set_modes(stack.config.channels_file, acq_alpha="live")
    test = builders.api(stack.client)
    live = _live_key(test)
    body = builders.payment_body(100_000)  # big-usd-cards: route [acq_alpha, acq_beta]
    paid = live.post("/v1/payments", body)
    assert paid.status_code == 201, paid.get_json()
    payment = paid.get_json()
    assert payment["status"] == "succeeded" and payment["livemode"] is True
    assert payment["routing"]["channel"] == "acq_alpha"
    assert payment["routing"]["dropped"] == [{"channel": "acq_beta", "reason": "mode"}]
    test_payment = test.post("/v1/payments", builders.payment_body(100_000)).get_json()
    assert test_payment["routing"]["channel"] == "acq_beta" and test_payment["livemode"] is False
    assert test_payment["routing"]["dropped"] == [{"channel": "acq_alpha", "reason": "mode"}]
    refund = live.post("/v1/refunds", {"payment": payment["id"], "reference": builders.unique("re")}).get_json()
    assert refund["status"] == "succeeded" and refund["livemode"] is True
    _not_found(test.get(f"/v1/refunds/{refund['id']}"))


def test_test_payments_never_use_up_a_live_daily_limit(live_alpha, stack):
    _set_modes(stack.config.channels_file, acq_alpha="live")
    test = builders.api(stack.client)
    live = _live_key(test)
    customer = {"id": "cus_both_modes", "country": "US"}
    for _ in range(10):  # big-usd-cards: daily_count 10 per customer
        assert test.post("/v1/payments", builders.payment_body(100_000, customer=customer)).status_code == 201
    over = test.post("/v1/payments", builders.payment_body(100_000, customer=customer))
    assert over.status_code == 402 and over.get_json()["error"]["code"] == "limit_exceeded"
    paid = live.post("/v1/payments", builders.payment_body(100_000, customer=customer))
    assert paid.status_code == 201 and paid.get_json()["status"] == "succeeded", paid.get_json()


def _live_channels_file(tmp_path):
    from channels.sandbox.testing import write_channels_file

    path = write_channels_file(tmp_path / "channels.yaml", "http://127.0.0.1:1")
    _set_modes(path, store=False, acq_alpha="live")
    return path


def test_no_process_starts_with_a_live_channel_without_its_secret(clean, tmp_path, monkeypatch):
    from app.config import scoped

    monkeypatch.delenv(LIVE_SECRET_ENV, raising=False)
    config = clean.with_(channels_file=_live_channels_file(tmp_path))
    started = []
    monkeypatch.setattr("app.entrypoints.server.run", lambda *args, **kwargs: started.append(args))
    # The worker and the CLI read their process's configuration: here, this block's.
    with scoped(config):
        with pytest.raises(ChannelConfigError, match=f"acq_alpha: environment variable {LIVE_SECRET_ENV}"):
            create_app(config)
        with pytest.raises(SystemExit, match="refusing to start"):
            worker.run_worker([], burst=True)
        result = CliRunner().invoke(main, ["serve", "--port", "1"])
        assert result.exit_code == 1 and "refusing to start" in result.output and LIVE_SECRET_ENV in result.output
        assert started == []
        monkeypatch.setenv(LIVE_SECRET_ENV, "")  # set but empty: no secret either
        with pytest.raises(ChannelConfigError, match="live channel"):
            create_app(config)
        monkeypatch.setenv(LIVE_SECRET_ENV, "live-secret-given-by-the-operator-0123456789")
        assert create_app(config) is not None
        assert CliRunner().invoke(main, ["serve", "--port", "1"]).exit_code == 0 and len(started) == 1
    channels_runtime.reset()
