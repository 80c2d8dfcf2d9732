"""Channel and webhook secrets (issue #11 items 1 and 9): generated at random for test channels and
shared by router and sandbox, callbacks that must match their attempt, secrets stored encrypted,
never shown again once an endpoint is deleted, and the key rotation command."""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import uuid
from types import SimpleNamespace

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import func, select

from app.adapters import channel_secrets, crypto
from app.adapters.channels_runtime import channel
from app.adapters.db import unit_of_work
from app.adapters.models import ChannelAccount, ChannelCallback, ChannelSecret, IdempotencyKey, Operation
from app.adapters.webhook_models import WebhookEndpoint
from app.config import scoped
from app.entrypoints.cli import main
from app.services.channel_accounts import credentials_digest
from channels.config import read_channels_file
from tests import builders
from tests.conftest import app_for
from tests.webhook_support import create_endpoint


def post_callback(stack, channel_id: str, body: bytes, headers: dict):
    return requests.post(f"{stack.api_url}/callbacks/{channel_id}", data=body, headers=headers, timeout=10)


def stored_callbacks() -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(ChannelCallback))


def old_derived_secret(channel_id: str) -> str:
    """What the router and the sandbox used before: an HMAC of the public channel id under a constant."""
    return "dev_" + hmac.new(b"payrouter-dev-channel-secret", channel_id.encode(), hashlib.sha256).hexdigest()[:40]


def all_stored_bytes() -> bytes:
    """Every value of every table that may hold a secret, as one blob to search."""
    with unit_of_work() as session:
        rows = [*session.execute(select(WebhookEndpoint.__table__)).all(),
                *session.execute(select(ChannelSecret.__table__)).all(),
                *session.execute(select(IdempotencyKey.__table__)).all()]
    return b"\n".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row)


def test_a_callback_signed_with_the_old_derived_secret_is_refused(stack):
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(8054)).get_json()  # processing, no callback coming
    forger = SimpleNamespace(id="sandbox", secret=old_derived_secret("sandbox"))
    body, headers = builders.signed_callback(forger, payment["id"], "succeeded", "sbx_forged")
    response = post_callback(stack, "sandbox", body, headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_signature"
    assert channel("sandbox").secret != old_derived_secret("sandbox")
    stack.work()
    assert stored_callbacks() == 0
    assert api.get(f"/v1/payments/{payment['id']}").get_json()["status"] == "processing"


def test_router_and_sandbox_share_a_random_secret_stored_encrypted(stack):
    """No env var set: each test channel got a random secret in the database (encrypted), the router
    signs its requests with it and the sandbox accepts them and signs its callbacks with it."""
    with unit_of_work() as session:
        stored = dict(session.execute(select(ChannelSecret.channel_id, ChannelSecret.secret_encrypted)).all())
    assert set(stored) == {"sandbox", "acq_alpha", "acq_beta"}
    secrets = {cid: channel(cid).secret for cid in stored}
    assert len(set(secrets.values())) == 3 and all(s.startswith("chsec_") and len(s) > 40 for s in secrets.values())
    for cid, token in stored.items():
        assert secrets[cid] not in token and crypto.decrypt(token) == secrets[cid]
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(8052)).get_json()  # a signed callback settles it
    assert stack.settle(api, f"/v1/payments/{payment['id']}")["status"] == "succeeded"


def test_a_callback_must_carry_the_reference_of_its_attempt_on_its_channel(stack, caplog):
    """Correctly signed, but for another channel reference than the one the attempt recorded, or from
    a channel the operation never went to: refused and logged, nothing stored; the real one applies."""
    api = builders.api(stack.client)
    payment = api.post("/v1/payments", builders.payment_body(8052)).get_json()  # processing; callback in 0.2 s
    with unit_of_work() as session:
        recorded = session.get(Operation, payment["id"]).channel_reference
    assert recorded and payment["status"] == "processing"
    caplog.set_level(logging.WARNING, logger="payrouter.callbacks")
    body, headers = builders.signed_callback(channel("sandbox"), payment["id"], "failed", "sbx_someone_elses",
                                             error_code="card_declined")
    response = post_callback(stack, "sandbox", body, headers)
    assert response.status_code == 403 and response.json()["error"]["code"] == "callback_attempt_mismatch"
    other = channel("acq_alpha")  # signed with that channel's own secret, but the payment never went there
    body, headers = builders.signed_callback(other, payment["id"], "failed", recorded)
    assert post_callback(stack, "acq_alpha", body, headers).status_code == 403
    assert sum("refused a callback" in r.getMessage() for r in caplog.records) == 2
    final = stack.settle(api, f"/v1/payments/{payment['id']}")
    assert final["status"] == "succeeded"
    with unit_of_work() as session:
        assert set(session.scalars(select(ChannelCallback.channel_reference))) == {recorded}


def test_init_generates_secrets_only_for_test_channels_without_one(clean, tmp_path, monkeypatch):
    path = tmp_path / "channels.yaml"
    common = {"adapter": "sandbox", "methods": ["card"], "currencies": ["USD"], "operations": ["payment"]}
    path.write_text(json.dumps({"channels": [
        {"id": "t_env", **common, "config": {"secret_env": "T_ENV_SECRET"}},
        {"id": "t_gen", **common, "config": {"secret_env": "T_GEN_SECRET"}},
        {"id": "t_none", **common},
    ]}))
    monkeypatch.setenv("T_ENV_SECRET", "from-the-environment")
    monkeypatch.delenv("T_GEN_SECRET", raising=False)
    config = clean.with_(channels_file=path)
    assert sorted(channel_secrets.ensure(config)) == ["t_gen", "t_none"]
    assert channel_secrets.ensure(config) == []  # safe twice: the stored ones stay
    store = channel_secrets.StoredChannelSecrets(config)
    specs = {spec.id: spec for spec in read_channels_file(path)}
    assert store(specs["t_gen"]) != store(specs["t_none"])
    assert store(specs["t_gen"]) == channel_secrets.StoredChannelSecrets(config)(specs["t_gen"])


def test_webhook_secrets_are_stored_encrypted_and_gone_once_the_endpoint_is_deleted(wh_client):
    api = builders.api(wh_client)
    created = api.post("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/hooks", "enabled_events": ["*"]},
                       key="create-1")
    first = created.get_json()["secret"]
    rotated = api.post(f"/v1/webhook_endpoints/{created.get_json()['id']}/rotate_secret", {}, key="rotate-1")
    second = rotated.get_json()["secret"]
    stored = all_stored_bytes()
    assert first.encode() not in stored and second.encode() not in stored
    with unit_of_work() as session:
        endpoint = session.get(WebhookEndpoint, created.get_json()["id"])
        assert (endpoint.secret, endpoint.previous_secret) == (second, first)  # decrypted on read
    replay = api.post("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/hooks", "enabled_events": ["*"]},
                      key="create-1")
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.data == created.data  # byte for byte
    eid = created.get_json()["id"]
    assert wh_client.delete(f"/v1/webhook_endpoints/{eid}", headers=api.headers()).status_code == 200
    for path, key in (("/v1/webhook_endpoints", "create-1"), (f"/v1/webhook_endpoints/{eid}/rotate_secret",
                                                                "rotate-1")):
        body = {"url": "http://127.0.0.1:9/hooks", "enabled_events": ["*"]} if key == "create-1" else {}
        again = api.post(path, body, key=key)
        assert again.headers["Idempotent-Replayed"] == "true" and again.get_json()["id"] == eid
        assert "secret" not in again.get_json()
        assert first.encode() not in again.data and second.encode() not in again.data
    with unit_of_work() as session:
        endpoint = session.get(WebhookEndpoint, eid)
        assert endpoint.secret_encrypted is None and endpoint.previous_secret_encrypted is None
        responses = [json.loads(r) for r in session.scalars(select(IdempotencyKey.response_body))]
    assert not any("secret" in r for r in responses if r.get("id") == eid)


def test_secrets_rotate_reencrypts_everything_under_the_new_key(wh_client, wh_config, monkeypatch):
    api = builders.api(wh_client)
    endpoint = create_endpoint(api, "http://127.0.0.1:9/hooks")
    key = api.post("/v1/api_keys", {}, key="key-create-1")  # its answer is stored sealed for replay
    assert key.status_code == 201 and key.get_json()["secret"].startswith("sk_test_"), key.get_json()
    rolled = api.post(f"/v1/api_keys/{key.get_json()['id']}/roll", {"overlap_seconds": 60}, key="key-roll-1")
    assert rolled.status_code == 200, rolled.get_json()
    assert channel_secrets.ensure(wh_config) == []  # the app factory already generated them
    brought = builders.revoked_channel_account(api.merchant_id, "sbxkey_rotated")  # its digest is keyed too
    with unit_of_work() as session:
        old_digest = session.get(ChannelAccount, brought).credentials_digest
    with unit_of_work() as session:
        generated = {row.channel_id: crypto.decrypt(row.secret_encrypted) for row in session.scalars(
            select(ChannelSecret))}
    assert len(generated) == 3 and all(secret.startswith("chsec_") for secret in generated.values())
    new_config = wh_config.with_(secret_key="the-new-key-" + "x" * 20)
    with scoped(new_config):  # the CLI's process, on the new key
        with pytest.raises(crypto.SecretUndecryptable):  # the new key alone opens nothing stored before
            with unit_of_work() as session:
                session.get(WebhookEndpoint, endpoint["id"]).secret  # noqa: B018
        runner = CliRunner()
        refused = runner.invoke(main, ["secrets", "rotate"])  # the old key not given: nothing changes
        assert refused.exit_code == 1 and "nothing was changed" in refused.output
        monkeypatch.setenv("OLD_PAYROUTER_SECRET_KEY", crypto.current_key(wh_config))
        result = runner.invoke(main, ["secrets", "rotate", "--old-key-env", "OLD_PAYROUTER_SECRET_KEY"])
        assert result.exit_code == 0, result.output
        counts = json.loads(result.output)
        assert counts == {"channel_secrets": 3, "channel_account_credentials": 1, "webhook_endpoint_secrets": 1,
                          "stored_responses": 3}  # the endpoint's, the key's and the rolled key's
        with unit_of_work() as session:  # the same credentials brought now are found under the new key
            digest = session.get(ChannelAccount, brought).credentials_digest
        assert digest != old_digest and digest == credentials_digest({"api_key": "sbxkey_rotated"}, new_config)
        with unit_of_work() as session:  # under the new key alone now
            assert session.get(WebhookEndpoint, endpoint["id"]).secret == endpoint["secret"]
            assert {row.channel_id: crypto.decrypt(row.secret_encrypted) for row in session.scalars(
                select(ChannelSecret))} == generated
        # The keys' stored answers replay from an API on the new key alone, byte for byte.
        on_new_key = builders.Api(app_for(new_config).test_client(), api.secret, api.merchant_id)
        for path, body, idem, first in (("/v1/api_keys", {}, "key-create-1", key),
                                        (f"/v1/api_keys/{key.get_json()['id']}/roll", {"overlap_seconds": 60},
                                         "key-roll-1", rolled)):
            again = on_new_key.post(path, body, key=idem)
            assert again.headers["Idempotent-Replayed"] == "true" and again.data == first.data, again.get_json()
    with pytest.raises(crypto.SecretUndecryptable):  # and no longer under the old one
        with unit_of_work() as session:
            session.get(WebhookEndpoint, endpoint["id"]).secret  # noqa: B018


@contextlib.contextmanager
def scratch_database(config, tmp_path):
    """A database of its own for a migration test: a SQLite file, or a scratch PostgreSQL database."""
    from sqlalchemy import create_engine, text

    if not config.database_url.startswith("postgresql"):
        engine = create_engine(f"sqlite:///{tmp_path / 'migration.db'}")
        yield engine
        engine.dispose()
        return
    name = f"payrouter_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(config.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine = create_engine(admin.url.set(database=name))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_migration_0008_encrypts_what_was_stored_in_clear_and_downgrading_restores_it(config, tmp_path):
    from alembic import command
    from sqlalchemy import text

    from app.adapters.migrate import alembic_config

    def response(endpoint_id: str, secret: str) -> bytes:
        return json.dumps({"id": endpoint_id, "object": "webhook_endpoint", "secret": secret}).encode()

    with scratch_database(config, tmp_path) as engine, engine.begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0007_account_moves")
        connection.execute(text("INSERT INTO merchants (id, name, created_at) "
                                "VALUES ('mer_m', 'M', CURRENT_TIMESTAMP)"))
        for eid, secret, previous, deleted in (("we_live", "whsec_A", "whsec_P", None),
                                               ("we_gone", "whsec_G", None, "2026-01-01 00:00:00")):
            connection.execute(text(
                "INSERT INTO webhook_endpoints (id, merchant_id, url, enabled_events, metadata, secret, "
                "previous_secret, deleted_at, created_at) "
                "VALUES (:id, 'mer_m', 'https://example.com/h', '[\"*\"]', '{}', :s, :p, :d, CURRENT_TIMESTAMP)"),
                {"id": eid, "s": secret, "p": previous, "d": deleted})
            connection.execute(text(
                "INSERT INTO idempotency_keys (merchant_id, key, request_hash, endpoint, status, response_status, "
                "response_body, created_at, locked_until, expires_at) "
                "VALUES ('mer_m', :k, 'h', '/v1/webhook_endpoints', 'done', 201, :b, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                {"k": f"create-{eid}", "b": response(eid, secret)})
        command.upgrade(cfg, "0008_secrets_at_rest")
        gone, live = connection.execute(text(  # by id: we_gone, we_live
            "SELECT secret_encrypted, previous_secret_encrypted FROM webhook_endpoints ORDER BY id")).all()
        assert (crypto.decrypt(live[0]), crypto.decrypt(live[1])) == ("whsec_A", "whsec_P")
        assert tuple(gone) == (None, None)  # a deleted endpoint's secret is erased
        bodies = dict(connection.execute(text("SELECT key, response_body FROM idempotency_keys")).all())
        sealed = json.loads(bytes(bodies["create-we_live"]))
        assert crypto.decrypt(sealed["secret"]) == "whsec_A"
        assert "secret" not in json.loads(bytes(bodies["create-we_gone"]))
        command.downgrade(cfg, "0007_account_moves")
        gone, live = connection.execute(text("SELECT secret, previous_secret FROM webhook_endpoints ORDER BY id")).all()
        assert tuple(live) == ("whsec_A", "whsec_P")
        assert gone[0].startswith("whsec_") and gone[0] != "whsec_G" and gone[1] is None
        bodies = dict(connection.execute(text("SELECT key, response_body FROM idempotency_keys")).all())
        assert json.loads(bytes(bodies["create-we_live"]))["secret"] == "whsec_A"


def test_init_under_another_key_says_why_and_exits_1_instead_of_a_traceback(clean):
    channel_secrets.ensure(clean)  # stored under this install's key
    with scoped(clean.with_(secret_key="another-install-" + "k" * 24)):  # the CLI's process configuration
        result = CliRunner().invoke(main, ["init"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert "decrypt" in result.output.lower() or "secret" in result.output.lower(), result.output


def test_migration_0026_gives_live_accounts_their_digest_and_leaves_a_duplicates_newer_without(config, tmp_path):
    """Accounts brought before 0026 get the keyed digest of their credentials; of two live ones
    already holding the same credentials on a channel, the older keeps it (the unique index then
    holds) and the newer has none; deleted ones are not compared."""
    from alembic import command
    from sqlalchemy import text

    from app.adapters.migrate import alembic_config

    rows = (("mca_old", "mer_a", "sandbox", "k1", None, "2026-01-01 00:00:00"),
            ("mca_dup", "mer_b", "sandbox", "k1", None, "2026-01-02 00:00:00"),
            ("mca_other", "mer_c", "acq_alpha", "k1", None, "2026-01-03 00:00:00"),
            ("mca_gone", "mer_d", "sandbox", "k2", "2026-01-05 00:00:00", "2026-01-04 00:00:00"))
    with scratch_database(config, tmp_path) as engine, engine.begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0025_run_issue_links")
        for account_id, merchant, channel_id, key, deleted, created in rows:
            connection.execute(text("INSERT INTO merchants (id, name, created_at) VALUES (:m, :m, CURRENT_TIMESTAMP)"),
                               {"m": merchant})
            connection.execute(text(
                "INSERT INTO channel_accounts (id, merchant_id, livemode, channel, credentials_encrypted, "
                "credential_fields, metadata, deleted_at, created_at) "
                "VALUES (:id, :m, false, :ch, :c, '[\"api_key\"]', '{}', :d, :t)"),
                {"id": account_id, "m": merchant, "ch": channel_id, "c": crypto.encrypt(json.dumps({"api_key": key})),
                 "d": deleted, "t": created})
        command.upgrade(cfg, "0026_channel_account_checks")
        found = dict(connection.execute(text("SELECT id, credentials_digest FROM channel_accounts")).all())
        digest = credentials_digest({"api_key": "k1"})
        assert found == {"mca_old": digest, "mca_dup": None, "mca_other": digest, "mca_gone": None}
        assert set(connection.execute(text("SELECT verified FROM channel_accounts")).scalars()) == {False}
        command.downgrade(cfg, "0025_run_issue_links")
