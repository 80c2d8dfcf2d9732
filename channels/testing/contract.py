"""``ChannelContract``: what the router needs of every adapter, as tests a plugin inherits (see
channels.testing). Each check drives the adapter either against its PSP (``psp_url``) or against one of
the kit's hosts (channels.testing.hosts), which see exactly what reached the wire."""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any, Callable, Mapping

import pytest

from app.domain.disputes import STATUSES as DISPUTE_STATUSES
from channels.base import (
    STATUSES,
    CallbackEvent,
    CaptureRequest,
    Channel,
    ChannelError,
    ChannelResult,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRequest,
    CredentialsRefused,
    DisputeNotice,
    InvalidCallback,
    PayoutRequest,
    RefundRequest,
    RequestNotSent,
    StatementLine,
    VoidRequest,
)
from channels.config import ChannelSpec
from channels.testing.hosts import CallbackReceiver, Host, closed_url
from channels.testing.wire import INJECTIONS, WireContract, fails, new_key, new_ref, wire_problems

FINAL = ("succeeded", "failed")
NOT_FOUND = "not_found"  # a status query's error_code for an operation the channel never saw
STATEMENT_OPERATIONS = ("payment", "topup", "capture", "refund", "payout", "void", "dispute")
# What the router keeps of a result: the widths of the attempts table's columns (app/adapters/models.py,
# which tests/unit/test_channel_kit_limits.py holds these to), and ``raw`` as JSON.
RESULT_LIMITS = {"channel_reference": 200, "error_code": 60, "error_message": 500}
# What the router keeps of a verified callback (the inbox's columns) and of a dispute notice (the
# disputes table's), held to them by tests/unit/test_channel_kit_limits.py.
CALLBACK_LIMITS = {"reference": 200, "channel_reference": 200, "dedupe_key": 300}
DISPUTE_LIMITS = {"channel_reference": 200, "reason": 60}


def storable(result: ChannelResult) -> ChannelResult:
    """``result``, once it is checked to be what the router can store: a ChannelResult of one of its
    statuses, text fields within their columns, and ``raw`` a mapping that JSON can hold."""
    assert isinstance(result, ChannelResult), f"{result!r} is not a ChannelResult"
    assert result.status in STATUSES, f"status {result.status!r} is not one of {STATUSES}"
    for name, limit in RESULT_LIMITS.items():
        value = getattr(result, name)
        assert value is None or isinstance(value, str) and len(value) <= limit, f"{name} {value!r:.80}: not text of " \
            f"at most {limit} characters"
    assert isinstance(result.raw, Mapping), f"raw is a {type(result.raw).__name__}, not a mapping"
    try:
        json.dumps(dict(result.raw))
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"raw cannot be stored as JSON: {exc}") from None
    return result


class ChannelContract(WireContract):
    """Subclass as ``Test<YourChannel>``; set ``adapter`` and ``outcomes``, and provide ``psp_url``."""

    adapter: type[Channel]
    outcomes: Mapping[str, int] = {}
    channel_id = "kit"
    secret = "kit-secret"
    currency = "USD"
    methods: tuple[str, ...] = ("card",)
    operations: tuple[str, ...] = ("payment", "refund")  # add "withdrawal" for payouts
    payment_method: Mapping[str, Any] = {"type": "card", "brand": "visa", "country": "US", "last4": "4242"}
    config: Mapping[str, Any] = {}  # the instance's config besides base_url
    timeout_ms = 500
    takes_tokens = True  # a card token reaches the PSP
    captures = False  # manual capture: charge → requires_capture → capture / void
    statement_lists_charges_at_once = True  # a succeeded charge is on today's statement straight away
    disputes = False  # the PSP reports chargebacks in signed callbacks (DisputeNotice): outcomes["disputed"]
    sends_credentials = True  # a merchant account's requests carry one of its credential values as is
    callback_wait_s = 10.0

    # ---- what a plugin may override -------------------------------------------------------------

    def make_channel(self, base_url: str, secret: str | None = None) -> Channel:
        """The adapter as the router builds it from a channels file entry pointing at ``base_url``."""
        spec = ChannelSpec(id=self.channel_id, adapter=f"{self.adapter.__module__}:{self.adapter.__qualname__}",
                           methods=tuple(self.methods), currencies=(self.currency,),
                           operations=tuple(self.operations), timeout_ms=self.timeout_ms,
                           config={**self.config, "base_url": base_url})
        return self.adapter(spec, self.secret if secret is None else secret)

    def charge_request(self, amount: int, **changes) -> ChargeRequest:
        fields = dict(operation="payment", reference=new_ref("pay"), amount=amount, currency=self.currency,
                      payment_method=dict(self.payment_method), callback_url=None, idempotency_key=new_key())
        return ChargeRequest(**{**fields, **changes})

    def account_credentials(self, psp_url: str) -> Mapping[str, str]:
        """Credentials of a merchant's own account that the PSP (or its fake) takes, exactly the
        adapter's ``credential_fields``: needed when the adapter checks credentials
        (``verify_credentials``) and for the account's charge at the PSP (``credential_fields``
        declared); each call may open a new account."""
        pytest.skip(f"{type(self).__name__}.account_credentials is not given (see channels.testing)")

    @pytest.fixture(scope="class")
    @classmethod
    def psp_url(cls):
        """The base URL of the PSP, or of a fake of it, the adapter's channel talks to."""
        raise NotImplementedError(f"{cls.__name__} must provide the psp_url fixture (see channels.testing)")

    # ---- the kit's fixtures ---------------------------------------------------------------------

    @pytest.fixture
    def channel(self, psp_url) -> Channel:
        return self.make_channel(psp_url)

    @pytest.fixture(scope="class")
    @classmethod
    def wire(cls):
        """A host that records what reaches the wire and answers 503 (a refusal) to everything."""
        with Host() as host:
            yield host

    @pytest.fixture(scope="class")
    @classmethod
    def silent(cls):
        """A host that reads each request and never answers."""
        with Host(answer=None) as host:
            yield host

    @pytest.fixture(scope="class")
    @classmethod
    def dropping(cls):
        """A host that reads each request and closes the connection without an answer."""
        with Host(answer=b"") as host:
            yield host

    @pytest.fixture(scope="class")
    @classmethod
    def callbacks(cls):
        with CallbackReceiver() as receiver:
            yield receiver

    def amount(self, outcome: str) -> int:
        if outcome not in self.outcomes:
            if outcome in ("succeeded", "declined"):
                raise AssertionError(f"{type(self).__name__}.outcomes must name an amount for {outcome!r}")
            pytest.skip(f"the PSP has no {outcome!r} outcome ({type(self).__name__}.outcomes)")
        return self.outcomes[outcome]

    def refund_request(self, channel_reference: str, amount: int, key: str | None = None) -> RefundRequest:
        return RefundRequest(new_ref("re"), channel_reference, amount, self.currency, None, key or new_key())

    def payout_request(self, amount: int, key: str | None = None) -> PayoutRequest:
        return PayoutRequest(new_ref("wd"), amount, self.currency, {"type": "bank_account", "country": "US",
                                                                 "last4": "6789"}, None, key or new_key())

    def changes(self, channel: Channel, channel_reference: str = "ref_kit") -> dict[str, Callable[[str], Any]]:
        """Every change the instance declares, each as a call taking an idempotency key."""
        ok = self.outcomes.get("succeeded", 1000)
        calls = {"charge": lambda key: channel.charge(self.charge_request(ok, idempotency_key=key))}
        if "refund" in self.operations:
            calls["refund"] = lambda key: channel.refund(self.refund_request(channel_reference, ok, key))
        if "withdrawal" in self.operations:
            calls["payout"] = lambda key: channel.payout(self.payout_request(ok, key))
        if self.captures:
            calls["capture"] = lambda key: channel.capture(CaptureRequest(
                new_ref("pay"), channel_reference, ok, self.currency, key))
            calls["void"] = lambda key: channel.void(VoidRequest(new_ref("pay"), channel_reference, key))
        return calls

    # ---- charges: outcomes are data, faults are exceptions ----------------------------------------

    def test_a_charge_that_succeeds_is_succeeded_with_the_channels_reference(self, channel):
        result = storable(channel.charge(self.charge_request(self.amount("succeeded"))))
        assert result.status == "succeeded" and result.channel_reference and isinstance(result.channel_reference, str)

    def test_a_decline_is_a_failed_result_with_the_psps_code_not_an_exception(self, channel):
        result = storable(channel.charge(self.charge_request(self.amount("declined"))))
        assert result.status == "failed" and result.error_code and isinstance(result.error_code, str)

    def test_no_answer_from_the_psp_is_an_unknown_outcome_a_query_settles(self, channel):
        request = self.charge_request(self.amount("unknown"))
        with pytest.raises(ChannelTimeout):
            channel.charge(request)
        found = storable(self._eventually(lambda: channel.query(request.reference),
                                          lambda r: r.error_code != NOT_FOUND))
        assert found.status in STATUSES and found.channel_reference, found

    def test_a_5xx_at_the_psp_is_a_refusal_and_nothing_was_charged(self, channel):
        request = self.charge_request(self.amount("refused"))
        with pytest.raises(ChannelUnavailable):
            channel.charge(request)
        found = storable(channel.query(request.reference))
        assert found.status == "failed" and found.error_code == NOT_FOUND, found

    def test_a_channel_that_cannot_be_reached_is_never_sent(self):
        unreachable = self.make_channel(closed_url())
        calls = {**self.changes(unreachable), "query": lambda key: unreachable.query(new_ref("pay"))}
        for name, call in calls.items():
            fault = fails(call, new_key())
            assert isinstance(fault, ChannelUnavailable), f"{name}: {fault!r}, not ChannelUnavailable"

    def test_a_request_sent_and_never_answered_is_an_unknown_outcome(self, silent):
        quiet = self.make_channel(silent.url)
        for name, call in self.changes(quiet).items():
            mark, started = len(silent.requests), time.monotonic()
            fault = fails(call, new_key())
            assert isinstance(fault, ChannelTimeout), f"{name}: {fault!r}, not ChannelTimeout"
            assert silent.since(mark), f"{name}: nothing reached the channel, yet the outcome is unknown"
            assert time.monotonic() - started < 3 * self.timeout_ms / 1000 + 2, f"{name} outlasted its timeout"

    def test_a_connection_dropped_after_sending_is_an_unknown_outcome(self, dropping):
        dropped = self.make_channel(dropping.url)
        for name, call in self.changes(dropped).items():
            mark, key = len(dropping.requests), new_key()
            fault = fails(call, key)
            assert isinstance(fault, ChannelTimeout), f"{name}: {fault!r}, not ChannelTimeout (it may be charged)"
            sent = dropping.since(mark)
            assert sent and all(key.encode() in raw for raw in sent), f"{name}: sent again without its key"

    def test_a_5xx_answer_is_a_refusal(self, wire):
        refusing = self.make_channel(wire.url)
        for name, call in self.changes(refusing).items():
            fault = fails(call, new_key())
            assert isinstance(fault, ChannelUnavailable), f"{name}: {fault!r}, not ChannelUnavailable"

    # ---- idempotency ---------------------------------------------------------------------------

    def test_every_change_carries_its_idempotency_key(self, wire):
        wired = self.make_channel(wire.url)
        for name, call in self.changes(wired).items():
            mark, key = len(wire.requests), new_key()
            fails(call, key)
            sent = wire.since(mark)
            assert sent and any(key.encode() in raw for raw in sent), f"{name}: the idempotency key was not sent"

    def test_the_same_idempotency_key_is_one_operation(self, channel):
        request = self.charge_request(self.amount("succeeded"))
        first, again = channel.charge(request), channel.charge(request)
        assert again.status == first.status == "succeeded"
        assert again.channel_reference == first.channel_reference

    # ---- status queries ------------------------------------------------------------------------

    def test_a_query_finds_a_charge_by_our_reference_and_by_the_channels(self, channel):
        request = self.charge_request(self.amount("succeeded"))
        paid = channel.charge(request)
        for found in map(storable, (channel.query(request.reference),
                                    channel.query(request.reference, paid.channel_reference))):
            assert found.status == "succeeded" and found.channel_reference == paid.channel_reference, found

    def test_a_query_for_an_operation_the_channel_never_saw_is_failed_not_found(self, channel):
        found = storable(channel.query(new_ref("pay")))
        assert found.status == "failed" and found.error_code == NOT_FOUND, found

    # ---- refunds, payouts, captures, as the instance declares them -----------------------------------

    def test_a_refund_of_a_charge(self, channel):
        if "refund" not in self.operations:
            pytest.skip("the instance does not declare refunds")
        paid = channel.charge(self.charge_request(self.amount("succeeded")))
        refunded = storable(channel.refund(self.refund_request(paid.channel_reference,
                                                               self.amount("succeeded") // 2)))
        assert refunded.status in ("succeeded", "processing") and refunded.channel_reference, refunded

    def test_a_payout(self, channel):
        if "withdrawal" not in self.operations:
            pytest.skip("the instance does not declare withdrawals")
        paid = storable(channel.payout(self.payout_request(self.amount("succeeded"))))
        assert paid.status in ("succeeded", "processing") and paid.channel_reference, paid

    def test_an_authorization_is_captured_or_voided(self, channel):
        if not self.captures:
            pytest.skip("the adapter does not declare manual capture (captures = False)")
        ok = self.amount("succeeded")
        for then, expected in (("capture", "succeeded"), ("void", "canceled")):
            request = self.charge_request(ok, capture_method="manual")
            held = storable(channel.charge(request))
            assert held.status == "requires_capture" and held.channel_reference, held
            if then == "capture":
                done = channel.capture(CaptureRequest(request.reference, held.channel_reference, ok, self.currency,
                                                      new_key()))
            else:
                done = channel.void(VoidRequest(request.reference, held.channel_reference, new_key()))
            assert storable(done).status == expected, done

    # ---- merchants' own accounts, when the adapter declares credential_fields ------------------------

    def _credential_fields(self) -> tuple[str, ...]:
        if not self.adapter.credential_fields:
            pytest.skip("the adapter takes no merchant credentials (credential_fields is empty)")
        return tuple(self.adapter.credential_fields)

    def test_a_merchant_account_sends_its_credentials_and_the_channel_still_its_own(self, wire):
        credentials = {name: f"kitcred{uuid.uuid4().hex}" for name in self._credential_fields()}
        platform = self.make_channel(wire.url)
        account = platform.with_credentials(credentials)
        assert isinstance(account, Channel) and account is not platform, \
            "with_credentials must return another instance (the router keeps one per account beside the channel's)"
        assert account.id == platform.id
        shown = f"{account!r} {account} {platform!r} {platform}"
        assert not any(value in shown for value in credentials.values()), "a credential is in a repr"
        calls = {**self.changes(account), "query": lambda key: account.query(new_ref("pay"))}
        for name, call in calls.items():
            mark = len(wire.requests)
            fault = fails(call, new_key())
            sent = wire.since(mark)
            assert sent, f"{name}: nothing reached the wire"
            if self.sends_credentials:
                assert all(any(value.encode() in raw for value in credentials.values()) for raw in sent), \
                    f"{name}: the account's request went without its credentials"
            assert fault is None or not any(value in f"{fault} {fault!r}" for value in credentials.values()), \
                f"{name}: a credential is in the fault"
        for name, call in {**self.changes(platform), "query": lambda key: platform.query(new_ref("pay"))}.items():
            mark = len(wire.requests)
            fails(call, new_key())
            assert not any(value.encode() in raw for raw in wire.since(mark) for value in credentials.values()), \
                f"{name}: the channel's own request carried the account's credentials (with_credentials changed it)"

    def test_line_breaks_in_a_merchants_credentials_never_reach_the_wire(self, wire):
        """The router refuses such credentials when a merchant brings them (400); an account stored
        before that must still never put them on the wire, and must say so: ``with_credentials``
        refusing them, or a call raising ``RequestNotSent`` (as channels.http does), never a bare
        ChannelUnavailable or ChannelTimeout, which the router would count against the channel's
        circuit, for every merchant, although nothing reached the channel."""
        fields = self._credential_fields()
        for value in INJECTIONS:
            mark = len(wire.requests)
            try:
                account = self.make_channel(wire.url).with_credentials({name: value for name in fields})
            except Exception:  # noqa: BLE001 - refused at once: the router records the account unusable
                continue
            fault = fails(account.charge, self.charge_request(self.amount("succeeded")))
            sent = wire.since(mark)
            for raw in sent:
                assert not wire_problems(raw), (wire_problems(raw), raw[:300])
            if not sent:
                assert isinstance(fault, RequestNotSent), \
                    f"nothing was sent, and the charge answered {fault!r}: raise RequestNotSent (channels.base)"

    def test_a_merchant_account_charges_and_a_key_the_psp_refuses_is_credentials_refused(self, channel, psp_url):
        fields = self._credential_fields()
        credentials = dict(self.account_credentials(psp_url))
        assert sorted(credentials) == sorted(fields), f"account_credentials gave {sorted(credentials)}, not {fields}"
        account = channel.with_credentials(credentials)
        request = self.charge_request(self.amount("succeeded"))
        paid = storable(account.charge(request))
        assert paid.status == "succeeded" and paid.channel_reference, paid
        found = storable(account.query(request.reference, paid.channel_reference))
        assert found.status == "succeeded" and found.channel_reference == paid.channel_reference, found
        wrong = channel.with_credentials({name: f"kitwrong{uuid.uuid4().hex}" for name in fields})
        try:
            refused = storable(wrong.charge(self.charge_request(self.amount("succeeded"))))
        except CredentialsRefused:  # the router records it as a decline, channel_credentials_refused
            return
        except ChannelError as exc:
            refused = exc
        raise AssertionError(f"a charge with credentials the PSP refuses answered {refused!r}: raise "
                             "CredentialsRefused (channels.base). The merchant's key is wrong, not the channel "
                             "down (a fault) nor a decline of the channel (a failed result, which counts against "
                             "its success rate for every merchant)")

    # ---- disputes, when the PSP reports them (disputes = True) ----------------------------------------

    def test_a_chargeback_is_a_signed_dispute_notice_about_the_payment(self, channel, callbacks, psp_url):
        if not self.disputes:
            pytest.skip("the PSP reports no disputes (disputes = False)")
        if "disputed" not in self.outcomes:
            raise AssertionError(f"{type(self).__name__}.outcomes must name an amount for 'disputed'")
        path = f"/callbacks/{self.channel_id}/{uuid.uuid4().hex}"
        request = self.charge_request(self.amount("disputed"), callback_url=callbacks.url + path)
        paid = storable(channel.charge(request))
        assert paid.status == "succeeded" and paid.channel_reference, paid
        delivery, event = self._dispute_callback(channel, callbacks, path)
        notice = event.dispute
        assert (event.reference, event.channel_reference) == (request.reference, paid.channel_reference), \
            "a dispute's callback names the disputed payment: our reference and the payment's channel reference " \
            f"(the dispute's own id goes in DisputeNotice.channel_reference), not {event.reference!r}, " \
            f"{event.channel_reference!r}"
        for name, limit in CALLBACK_LIMITS.items():
            value = getattr(event, name)
            assert isinstance(value, str) and 0 < len(value) <= limit, f"event.{name} {value!r:.80}"
        assert isinstance(notice.channel_reference, str) and 0 < len(notice.channel_reference) <= \
            DISPUTE_LIMITS["channel_reference"], f"the dispute's channel_reference {notice.channel_reference!r:.80}"
        assert notice.channel_reference != paid.channel_reference, "the dispute's id is the payment's"
        assert notice.status in DISPUTE_STATUSES, f"dispute status {notice.status!r} is not one of {DISPUTE_STATUSES}"
        assert type(notice.amount) is int and 0 < notice.amount <= request.amount, f"amount {notice.amount!r}"
        assert notice.currency == request.currency, f"currency {notice.currency!r}, not the payment's"
        assert notice.reason is None or isinstance(notice.reason, str) and len(notice.reason) <= \
            DISPUTE_LIMITS["reason"], f"reason {notice.reason!r:.80}"
        again = channel.verify_callback(delivery.headers, delivery.body)
        assert again.dedupe_key == event.dedupe_key and again.dispute == notice
        for name, (headers, body) in {"padded": (delivery.headers, b" " + delivery.body),
                                      "unsigned": ({}, delivery.body)}.items():
            refused = fails(channel.verify_callback, headers, body)
            assert isinstance(refused, InvalidCallback), f"a dispute callback {name} was not refused as InvalidCallback"
        other = self.make_channel(psp_url, secret=self.secret + "-not-ours")
        refused = fails(other.verify_callback, delivery.headers, delivery.body)
        assert isinstance(refused, InvalidCallback), "a dispute callback signed with another secret was not refused"

    def _dispute_callback(self, channel: Channel, callbacks: CallbackReceiver, path: str):
        """The first callback posted to ``path`` that carries a DisputeNotice (a PSP may post the
        payment's own first), with its event."""
        deadline, seen = time.monotonic() + self.callback_wait_s, []
        while True:
            for delivery in [d for d in list(callbacks.deliveries) if d.path == path][len(seen):]:
                event = channel.verify_callback(delivery.headers, delivery.body)
                assert isinstance(event, CallbackEvent)
                if event.dispute is not None:
                    assert isinstance(event.dispute, DisputeNotice), f"event.dispute is a {type(event.dispute)}"
                    return delivery, event
                seen.append(event)
            if time.monotonic() > deadline:
                raise AssertionError(f"no callback to {path} carried a DisputeNotice within {self.callback_wait_s:g}s"
                                     f" (event.dispute); the PSP posted {len(seen)}: "
                                     f"{[(e.status, e.channel_reference) for e in seen]}")
            time.sleep(0.05)

    # ---- callbacks -----------------------------------------------------------------------------

    def test_a_pending_charge_is_processing_and_its_signed_callback_parses(self, channel, callbacks, psp_url):
        path = f"/callbacks/{self.channel_id}/{uuid.uuid4().hex}"
        request = self.charge_request(self.amount("processing"), callback_url=callbacks.url + path)
        pending = storable(channel.charge(request))
        assert pending.status == "processing" and pending.channel_reference, pending
        delivery = callbacks.wait_for(path, self.callback_wait_s)
        event = channel.verify_callback(delivery.headers, delivery.body)
        assert isinstance(event, CallbackEvent)
        assert (event.reference, event.channel_reference) == (request.reference, pending.channel_reference)
        assert event.status in FINAL and isinstance(event.dedupe_key, str) and event.dedupe_key
        assert channel.verify_callback(delivery.headers, delivery.body).dedupe_key == event.dedupe_key

        forgeries = {"unsigned": ({}, delivery.body), "padded": (delivery.headers, b" " + delivery.body),
                     "not JSON": (delivery.headers, b"\xff\xfe{"), "empty": (delivery.headers, b"")}
        if request.reference.encode() in delivery.body:  # the same signature over another operation
            forgeries["another operation"] = (delivery.headers, delivery.body.replace(
                request.reference.encode(), new_ref("pay").encode()))
        for name, (headers, body) in forgeries.items():
            refused = fails(channel.verify_callback, headers, body)
            assert isinstance(refused, InvalidCallback), f"a callback {name} was not refused as InvalidCallback"
        other = self.make_channel(psp_url, secret=self.secret + "-not-ours")
        refused = fails(other.verify_callback, delivery.headers, delivery.body)
        assert isinstance(refused, InvalidCallback), "a callback signed with another secret was not refused"

    def test_a_callback_nobody_signed_is_refused(self, channel):
        for headers, body in (({}, b"{}"), ({}, b"\xff"), ({"X-Signature": "v1=00"}, b'{"status": "succeeded"}')):
            refused = fails(channel.verify_callback, headers, body)
            assert isinstance(refused, InvalidCallback), (headers, body)

    # ---- merchant accounts' credentials, if the adapter checks them ---------------------------------

    def test_credentials_are_checked_with_the_psp(self, channel, psp_url, wire, silent):
        if type(channel).verify_credentials is Channel.verify_credentials:
            pytest.skip("the adapter does not check credentials (they are stored unchecked)")
        taken = dict(self.account_credentials(psp_url))
        assert set(taken) == set(self.adapter.credential_fields), f"{sorted(taken)} are not the credential_fields"
        assert channel.verify_credentials(taken) is None, "credentials the PSP issued were not taken"
        forged = {name: value[:-4] + "0000" if len(value) > 4 else value + "0000" for name, value in taken.items()}
        refused = fails(channel.verify_credentials, forged)
        assert isinstance(refused, CredentialsRefused), f"forged credentials: {refused!r}, not CredentialsRefused"
        for value in forged.values():
            assert value not in str(refused), "the refusal quotes the credentials"
        for host, why in ((closed_url(), "a PSP that cannot be reached"), (wire.url, "a PSP answering 503"),
                          (silent.url, "a PSP that never answers")):
            fault = fails(self.make_channel(host).verify_credentials, taken)
            assert isinstance(fault, (ChannelUnavailable, ChannelTimeout)), \
                f"{why}: {fault!r}, not ChannelUnavailable or ChannelTimeout (it says nothing of the credentials)"

    # ---- statements ----------------------------------------------------------------------------

    def test_statement_lines_are_typed(self, channel):
        if type(channel).statement is Channel.statement:
            pytest.skip("the adapter serves no statement")
        request = self.charge_request(self.amount("succeeded"))
        paid = channel.charge(request)
        today = dt.datetime.now(dt.timezone.utc).date()
        lines = list(channel.statement(today))
        for line in lines:
            assert isinstance(line, StatementLine), line
            for name in ("channel_reference", "operation", "currency", "status"):
                assert isinstance(getattr(line, name), str) and getattr(line, name), (name, line)
            assert line.operation in STATEMENT_OPERATIONS, line
            assert type(line.amount) is int and line.amount >= 0 and type(line.fee) is int, line
            assert isinstance(line.settled_at, dt.datetime) and line.settled_at.utcoffset() is not None, line
        if self.statement_lists_charges_at_once:
            if not any(line.channel_reference == paid.channel_reference for line in lines):  # past midnight
                lines += list(channel.statement(today - dt.timedelta(days=1)))
            mine = [line for line in lines if line.channel_reference == paid.channel_reference]
            assert len(mine) == 1, f"the charge {paid.channel_reference} is on the statement {len(mine)} times"
            assert (mine[0].amount, mine[0].currency, mine[0].status) == (request.amount, self.currency, "succeeded")

    # ---- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _eventually(ask: Callable[[], ChannelResult], done: Callable[[ChannelResult], bool],
                    timeout: float = 10.0) -> ChannelResult:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = ask()
                if done(result) or time.monotonic() > deadline:
                    return result
            except ChannelError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
