"""Builders for test data: one place that knows how to make a merchant, an account, a body."""
from __future__ import annotations

import contextlib
import itertools
import uuid

from app.adapters.db import unit_of_work
from app.services import accounts
from app.services.merchants import create_merchant

_seq = itertools.count(1)


def unique(prefix: str = "ref") -> str:
    return f"{prefix}-{next(_seq)}-{uuid.uuid4().hex[:8]}"


class Api:
    """A merchant's view of the API through a Flask test client (or any requests-like session)."""

    def __init__(self, client, secret: str, merchant_id: str):
        self.client, self.secret, self.merchant_id = client, secret, merchant_id

    def headers(self, key: str | None = None, **extra) -> dict:
        headers = {"Authorization": f"Bearer {self.secret}", **extra}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def post(self, path: str, body, key: str | None = None, **extra):
        key = unique("idem") if key is None else key
        return self.client.post(path, json=body, headers=self.headers(key, **extra))

    def get(self, path: str, **extra):
        return self.client.get(path, headers=self.headers(**extra))

    def account(self, currency: str = "USD", funded: int = 0, **fields) -> dict:
        body = {"currency": currency, "customer": {"id": unique("cus")}, **fields}
        response = self.post("/v1/accounts", body)
        assert response.status_code == 201, response.get_json()
        account = response.get_json()
        if funded:
            fund(self.merchant_id, account["id"], funded)
            account = self.get(f"/v1/accounts/{account['id']}").get_json()
        return account

    def transfer_body(self, source: str, target: str, amount: int, currency: str = "USD", **fields) -> dict:
        return {"from_account": source, "to_account": target, "amount": amount, "currency": currency,
                "reference": unique("tr"), **fields}


def merchant(name: str = "Shop", category: str | None = "retail", mode: str = "test") -> tuple[str, str]:
    with unit_of_work() as session:
        m, issued = create_merchant(session, name, category, mode)
    return m.id, issued.secret


def bare_system_account(merchant_id: str, account_id: str) -> None:
    """A merchant row and a USD system account of it at zero, written directly (no key, no system
    accounts of its own): for tests of what the database itself refuses."""
    from app.adapters.models import Account, Merchant

    with unit_of_work() as session:
        session.add(Merchant(id=merchant_id, name=merchant_id))
        session.flush()
        session.add(Account(id=account_id, merchant_id=merchant_id, kind="system", currency="USD", metadata_={},
                            available=0, pending=0, version=0))


def api(client, name: str = "Shop", mode: str = "test") -> Api:
    merchant_id, secret = merchant(name, mode=mode)
    return Api(client, secret, merchant_id)


def fund(merchant_id: str, account_id: str, amount: int) -> None:
    """Credit an account from its merchant's test-funding account (of the account's mode)."""
    from app.adapters.models import Account, Merchant
    from app.services.merchants import MerchantScope

    with unit_of_work() as session:
        m, account = session.get(Merchant, merchant_id), session.get(Account, account_id)
        scope = MerchantScope(m.id, m.name, m.category, account.livemode)
        accounts.fund_for_testing(session, scope, account_id, amount)


def store_channels(path=None) -> None:
    """Make the stored channels exactly those of ``path`` (default: the configured channels file), as
    ``payrouter channels import --prune`` does; this process runs them from its next request on."""
    from app.services import channel_import

    channel_import.import_file(path, "tests", prune=True)


CARD = {"type": "card", "brand": "visa", "country": "US", "last4": "4242"}


def card_token(sandbox_url: str, number: str = "4242424242424242", **card) -> dict:
    """A token from the sandbox's vault (``POST /tokens``, over HTTP): ``{token, brand, last4, country}``."""
    import json

    import urllib3

    body = {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123", **card}
    answer = urllib3.request("POST", f"{sandbox_url}/tokens", body=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
    assert answer.status == 200, answer.data
    return json.loads(answer.data)


def sandbox_account(sandbox_url: str) -> dict:
    """A merchant account at the sandbox PSP (``POST /accounts``, over HTTP): ``{id, api_key}``."""
    import json

    import urllib3

    answer = urllib3.request("POST", f"{sandbox_url}/accounts")
    assert answer.status == 200, answer.data
    return json.loads(answer.data)


def revoked_channel_account(merchant_id: str, api_key: str, channel: str = "sandbox", livemode: bool = False,
                            **fields) -> str:
    """A channel account as stored when its key was brought (and checked), whose key the PSP no
    longer takes (revoked, or a PSP that forgot it): the row written as the API writes it, as the
    API now refuses a key the PSP does not take. Its id (``mca_…``)."""
    return stored_channel_account(merchant_id, {"api_key": api_key}, channel, livemode, **fields)


def stored_channel_account(merchant_id: str, credentials: dict, channel: str = "sandbox", livemode: bool = False,
                           **fields) -> str:
    """A channel account row written as the API writes it, with whatever ``credentials`` (ones the API
    refuses today, as an account stored before a check was added may hold). Its id (``mca_…``)."""
    from app.adapters import account_channels
    from app.adapters.db import unit_of_work
    from app.adapters.models import ChannelAccount, new_id, utcnow
    from app.services.channel_accounts import credentials_digest

    with unit_of_work() as session:
        account = ChannelAccount(id=new_id("mca"), merchant_id=merchant_id, livemode=livemode, channel=channel,
                                 credentials_encrypted=account_channels.seal(credentials),
                                 credentials_digest=credentials_digest(credentials), verified=True,
                                 credential_fields=sorted(credentials), metadata_={}, created_at=utcnow(),
                                 **fields)
        session.add(account)
    return account.id


def payment_body(amount: int, currency: str = "USD", **fields) -> dict:
    return {"amount": amount, "currency": currency, "payment_method": dict(CARD), "reference": unique("pay"),
            "customer": {"id": unique("cus"), "country": "US"}, **fields}


def refund_body(payment: str, **fields) -> dict:
    """A refund of ``payment`` (in full unless ``amount`` is given)."""
    return {"payment": payment, "reference": unique("re"), **fields}


def signed_callback(channel, reference: str, status: str, channel_reference: str, event_id: str | None = None,
                    error_code: str | None = None) -> tuple[bytes, dict]:
    """A callback body and headers exactly as the sandbox PSP signs them (for the channel's secret)."""
    import json

    from channels.sandbox.signing import signed_headers

    body = json.dumps({"id": event_id or unique("sbxevt"), "type": f"operation.{status}", "created_at": "now",
                       "channel": channel.id, "data": {"id": channel_reference, "reference": reference,
                                                       "channel": channel.id, "status": status,
                                                       "error_code": error_code}}).encode()
    return body, {**signed_headers(channel.secret, body), "Content-Type": "application/json"}


def recorded_operation(merchant_id: str, amount: int, *, kind: str = "payment", channel: str = "acq_alpha",
                       fee: int = 0, minutes_ago: int = 1, status: str = "succeeded", **fields) -> str:
    """A USD card operation (succeeded unless ``status`` says otherwise) as stored ``minutes_ago`` (a
    recorded workload for replay, a channel's work in flight). Its id."""
    from datetime import datetime, timedelta

    from app.adapters.models import Operation, new_id

    operation_id = new_id("pay")
    with unit_of_work() as session:
        session.add(Operation(
            id=operation_id, merchant_id=merchant_id, kind=kind, status=status, amount=amount, currency="USD",
            fee=fee, reference=unique("pay"), idempotency_key=unique("idem"), payment_method=dict(CARD),
            customer={"id": unique("cus"), "country": "US"}, metadata_={}, routing={"ruleset_version": 1},
            channel=channel, created_at=datetime.utcnow() - timedelta(minutes=minutes_ago), **fields))
    return operation_id


def recorded_dispute(merchant_id: str, payment_id: str, amount: int, *, channel: str = "acq_alpha",
                     status: str = "needs_response") -> str:
    """A dispute of ``payment_id`` as stored when its channel reported it (``needs_response``: open). Its id."""
    from app.adapters.models import Dispute, new_id, utcnow

    dispute_id = new_id("dp")
    with unit_of_work() as session:
        session.add(Dispute(id=dispute_id, merchant_id=merchant_id, payment_id=payment_id, amount=amount,
                            currency="USD", reason="fraudulent", status=status, channel=channel,
                            channel_reference=unique("sbxdp"), metadata_={}, created_at=utcnow(),
                            updated_at=utcnow()))
    return dispute_id


def signed_dispute_callback(channel, reference: str, payment_channel_reference: str, dispute_reference: str,
                            status: str, amount: int, currency: str = "USD",
                            event_id: str | None = None, reason: str = "fraudulent") -> tuple[bytes, dict]:
    """A dispute callback body and headers exactly as the sandbox PSP signs them: the dispute
    ``dispute_reference`` of the payment ``reference`` (ours) / ``payment_channel_reference`` (the channel's)."""
    import json

    from channels.sandbox.signing import signed_headers

    body = json.dumps({"id": event_id or unique("sbxevt"), "type": f"dispute.{status}", "created_at": "now",
                       "channel": channel.id, "data": {"id": dispute_reference, "operation": "dispute",
                                                       "reference": reference, "payment": payment_channel_reference,
                                                       "channel": channel.id, "status": status, "amount": amount,
                                                       "currency": currency, "reason": reason}}).encode()
    return body, {**signed_headers(channel.secret, body), "Content-Type": "application/json"}


@contextlib.contextmanager
def process_running_without(channel_id: str, *, host: str, pid: int, role: str = "api"):
    """While in the block, a live process (its build report in Redis, as every process writes one)
    that runs the stored channels but could not build ``channel_id`` (a variable it lacks)."""
    import time

    from app.adapters import channel_builds

    now = time.time()
    report = channel_builds.Report(host=host, pid=pid, role=role, started_at=now, heartbeat_at=now,
                                   version="v1", built_at=now, stored_version="v1", failed_at=now,
                                   error=f"environment variable {channel_id.split('_')[-1].upper()}_URL is not set",
                                   unbuilt=(channel_id,))
    channel_builds.write(report)
    try:
        yield report
    finally:
        channel_builds.remove(report.name)
