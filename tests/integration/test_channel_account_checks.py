"""Merchant channel accounts are checked before they are stored (contract §4; the sandbox over HTTP):

- a key the PSP refuses is 422 ``channel_credentials_refused`` and nothing is stored; a PSP that
  cannot answer is 502 and nothing is stored (the Idempotency-Key released: a retry runs again);
  an adapter that cannot check credentials stores them unchecked (``verified: false``);
- the same credentials at one PSP are one merchant's: another merchant's, on the channel or on a
  sibling channel at the same origin, is 409 ``channel_credentials_in_use``, found by a keyed digest
  (never the plaintext, nor its bare hash); the same merchant may bring them on a sibling channel.
"""
import datetime as dt
import hashlib
import threading

import requests
from sqlalchemy import func, select, update

from app.adapters.db import unit_of_work
from app.adapters.models import ChannelAccount
from channels.base import Channel, ChannelUnavailable
from channels.sandbox.adapter import SandboxChannel
from channels.sandbox.client import SandboxClient
from tests import builders
from tests.integration.test_channel_accounts import bring
from tests.support import database_text

FORGED = "sbxkey_" + "f" * 32
OPS = {"Authorization": "Bearer ops-secret"}


def accounts_stored() -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(ChannelAccount))


def test_a_key_the_psp_refuses_is_422_and_nothing_is_stored(stack):
    api = builders.api(stack.client)
    refused = bring(api, FORGED, key="bring-forged")
    assert refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "channel_credentials_refused", "credentials")
    assert "nothing was stored" in error["message"] and FORGED not in refused.get_data(as_text=True)
    assert accounts_stored() == 0 and api.get("/v1/channel_accounts").get_json()["data"] == []
    again = bring(api, FORGED, key="bring-forged")  # a refusal is an answer: replayed as it was
    assert again.headers.get("Idempotent-Replayed") == "true" and again.data == refused.data
    taken = bring(api, builders.sandbox_account(stack.sandbox_url)["api_key"])
    assert taken.status_code == 201 and taken.get_json()["verified"] is True, taken.get_json()
    assert FORGED not in database_text()


def test_a_psp_that_cannot_answer_is_502_nothing_stored_and_the_key_can_be_retried(stack, monkeypatch):
    api = builders.api(stack.client)
    key = builders.sandbox_account(stack.sandbox_url)["api_key"]

    def down(self):
        raise ChannelUnavailable(f"{self.channel_id}: connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(SandboxClient, "whoami", down)
        failed = bring(api, key, key="bring-while-down")
    assert failed.status_code == 502, failed.get_json()
    error = failed.get_json()["error"]
    assert (error["type"], error["code"]) == ("api_error", "channel_unavailable")
    assert "could not check these credentials" in error["message"] and key not in failed.get_data(as_text=True)
    assert accounts_stored() == 0
    retried = bring(api, key, key="bring-while-down")  # the same key runs again once the PSP answers
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers, retried.get_json()
    assert retried.get_json()["verified"] is True


def test_an_adapter_that_cannot_check_stores_the_credentials_unchecked(stack, monkeypatch):
    monkeypatch.setattr(SandboxChannel, "verify_credentials", Channel.verify_credentials)
    api = builders.api(stack.client)
    created = bring(api, FORGED)
    assert created.status_code == 201 and created.get_json()["verified"] is False, created.get_json()
    assert api.get(f"/v1/channel_accounts/{created.get_json()['id']}").get_json()["verified"] is False


def test_the_same_credentials_are_one_merchants_at_one_psp(stack):
    mine, theirs = builders.api(stack.client, "Mine"), builders.api(stack.client, "Theirs")
    key = builders.sandbox_account(stack.sandbox_url)["api_key"]
    account = bring(mine, key).get_json()
    taken = bring(theirs, key)
    assert taken.status_code == 409, taken.get_json()
    error = taken.get_json()["error"]
    assert (error["code"], error["param"]) == ("channel_credentials_in_use", "credentials")
    assert mine.merchant_id not in error["message"] and account["id"] not in error["message"] and key not in \
        error["message"]
    assert theirs.get("/v1/channel_accounts").get_json()["data"] == []
    # acq_alpha is another channel of the same PSP (the sandbox's origin): the key is still mine there.
    elsewhere = bring(theirs, key, channel="acq_alpha")
    assert elsewhere.status_code == 409, elsewhere.get_json()
    assert elsewhere.get_json()["error"]["code"] == "channel_credentials_in_use"
    assert bring(mine, key, channel="acq_alpha").status_code == 201  # mine on a sibling channel: the same account
    # Compared by a keyed digest: neither the key nor its bare SHA-256 is stored anywhere.
    stored = database_text()
    assert key not in stored and hashlib.sha256(key.encode()).hexdigest() not in stored
    # Once the holder deletes its account, the credentials may be brought again.
    assert stack.client.delete(f"/v1/channel_accounts/{account['id']}", headers=mine.headers()).status_code == 200
    assert bring(theirs, key).status_code == 409  # still mine on acq_alpha, at the same PSP
    sibling = mine.get("/v1/channel_accounts").get_json()["data"][0]["id"]
    assert stack.client.delete(f"/v1/channel_accounts/{sibling}", headers=mine.headers()).status_code == 200
    assert bring(theirs, key).status_code == 201


def test_two_merchants_bringing_the_same_key_at_once_one_wins(stack):
    apis = [builders.api(stack.client, name) for name in ("One", "Two")]
    for _ in range(3):
        key, barrier, answers = builders.sandbox_account(stack.sandbox_url)["api_key"], threading.Barrier(2), []

        def hit(api, barrier=barrier, answers=answers, key=key):
            barrier.wait()
            answers.append(requests.post(f"{stack.api_url}/v1/channel_accounts", timeout=30,
                                         json={"channel": "sandbox", "credentials": {"api_key": key}},
                                         headers=api.headers(builders.unique("race"))))

        threads = [threading.Thread(target=hit, args=(api,)) for api in apis]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
        assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {"channel_credentials_in_use"}
        with unit_of_work() as session:
            session.execute(update(ChannelAccount).where(ChannelAccount.deleted_at.is_(None))
                            .values(deleted_at=dt.datetime(2026, 1, 1)))


def test_a_key_with_whitespace_at_either_end_is_refused_not_taken_for_other_credentials(stack):
    """#14 (attack a14 M3): a header value is trimmed on the way, so the PSP reads "KEY " as "KEY"
    while the uniqueness digest covers the exact string: merchant B bringing A's key with a space
    (or U+00A0) at either end is 400 parameter_invalid naming the field, the value not quoted,
    nothing asked of the PSP nor stored; never trimmed in silence."""
    mine, theirs = builders.api(stack.client, "Mine"), builders.api(stack.client, "Theirs")
    key = builders.sandbox_account(stack.sandbox_url)["api_key"]
    assert bring(mine, key).status_code == 201
    for variant in (key + " ", key + "  ", key + "\xa0", " " + key, "\xa0" + key):
        refused = bring(theirs, variant)
        assert refused.status_code == 400, (repr(variant), refused.get_json())
        error = refused.get_json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error", "parameter_invalid", "credentials[api_key]"), error
        assert "whitespace" in error["message"] and key not in refused.get_data(as_text=True)
    assert theirs.get("/v1/channel_accounts").get_json()["data"] == []
    assert accounts_stored() == 1
