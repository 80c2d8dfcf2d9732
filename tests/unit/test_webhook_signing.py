"""Standard Webhooks signing and the URL safety checks (no network: literal addresses only)."""
from __future__ import annotations

import json

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.services.webhooks import endpoints, signing


def test_signature_verifies_with_the_official_library():
    secret = signing.new_secret()
    body = json.dumps({"id": "evt_1", "type": "transfer.succeeded", "data": {}}).encode()
    import time

    headers = signing.headers([secret], "evt_1", int(time.time()), body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers)["id"] == "evt_1"
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_two_secrets_give_two_signatures_each_verifying():
    import time

    old, new = signing.new_secret(), signing.new_secret()
    body = b'{"id":"evt_2"}'
    headers = signing.headers([new, old], "evt_2", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers)


def test_secrets_are_fresh_and_long():
    import base64

    made = {signing.new_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(len(base64.b64decode(s.removeprefix("whsec_"))) >= 24 for s in made)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://127.8.9.1/x", "http://10.0.0.1/x", "http://172.16.5.4/x", "http://192.168.1.1/x",
    "http://169.254.169.254/x", "http://0.0.0.0/x", "http://[::1]/x", "http://[fe80::1]/x", "http://[fc00::1]/x",
    "http://[::ffff:10.0.0.1]/x", "http://100.64.0.1/x", "http://224.0.0.1/x",
])
def test_private_addresses_are_refused(url):
    assert "private" in endpoints.check_url(url, allow_private=False)
    assert endpoints.check_url(url, allow_private=True) is None


@pytest.mark.parametrize("url", ["https://93.184.215.14/x", "http://8.8.8.8:8080/x", "https://[2606:4700::1111]/x"])
def test_public_addresses_are_accepted(url):
    assert endpoints.check_url(url, allow_private=False) is None


@pytest.mark.parametrize("url", ["ftp://8.8.8.8/x", "https:///x", "http://u:p@8.8.8.8/x", "http://8.8.8.8:99999/x",
                                 "javascript:alert(1)"])
def test_malformed_urls_are_refused(url):
    assert endpoints.check_url(url, allow_private=True) is not None
