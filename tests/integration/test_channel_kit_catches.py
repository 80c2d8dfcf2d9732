"""The plugin kit has teeth: an adapter that gets one thing of the contract wrong fails the kit's check
of it, while the sandbox's own adapter passes the same check. Each broken adapter is the sandbox's
with one fault added, run against the sandbox over HTTP or the kit's own hosts."""
from __future__ import annotations

import copy
import datetime as dt
from dataclasses import replace

import pytest

from channels.base import (
    CallbackEvent,
    ChannelError,
    ChannelResult,
    ChannelTimeout,
    ChannelUnavailable,
    CredentialsRefused,
    InvalidCallback,
)
from channels.sandbox.adapter import SandboxChannel
from channels.sandbox.client import REFUSED_POST
from channels.testing import CallbackReceiver, Host
from tests.integration import test_channel_contract as sandbox_kit


class ForgetsTheKey(SandboxChannel):
    def __init__(self, spec, secret):
        super().__init__(spec, secret)
        headers = self.client._headers
        self.client._headers = lambda key=None, json_body=False: headers(None, json_body)


class DeclinesLoudly(SandboxChannel):
    def charge(self, req):
        result = super().charge(req)
        if result.status == "failed":
            raise ChannelError(f"declined: {result.error_code}")
        return result


class EchoesTheToken(SandboxChannel):
    def charge(self, req):
        return replace(super().charge(req), raw={"card": req.token})


class KeepsWhatJSONCannot(SandboxChannel):  # the router stores raw as JSON: its call would fail after the charge
    def charge(self, req):
        return replace(super().charge(req), raw={"at": dt.datetime.now()})


class CallsSilenceAFailure(SandboxChannel):  # the router would re-route a charge that may have gone through
    def charge(self, req):
        try:
            return super().charge(req)
        except ChannelTimeout:
            return ChannelResult("failed", None, "timeout")


class TrustsEveryCallback(SandboxChannel):
    def verify_callback(self, headers, body):
        try:
            return super().verify_callback(headers, body)
        except InvalidCallback:
            return CallbackEvent("sbx_1", "pay_1", "succeeded", None, "sandbox:1", {})


class DropsTheDispute(SandboxChannel):  # a chargeback read as the payment's own status: never recorded
    def verify_callback(self, headers, body):
        event = super().verify_callback(headers, body)
        return replace(event, dispute=None, status="succeeded") if event.dispute else event


class NamesTheDispute(SandboxChannel):  # the router would find no attempt of that reference: set aside
    def verify_callback(self, headers, body):
        event = super().verify_callback(headers, body)
        return replace(event, channel_reference=event.dispute.channel_reference) if event.dispute else event


class LendsItsClient(SandboxChannel):  # the platform's own instance now sends the merchant's key
    def with_credentials(self, credentials):
        self.client = self.client.bearing(credentials["api_key"])
        return self


class IgnoresTheCredentials(SandboxChannel):  # the merchant's operations made on the platform's account
    def with_credentials(self, credentials):
        return copy.copy(self)


class TakesAWrongKeyForAnOutage(SandboxChannel):  # one merchant's bad key would fail over and open the circuit
    def with_credentials(self, credentials):
        account = super().with_credentials(credentials)
        account.client.refused_post = REFUSED_POST
        return account


class CallsARefusedKeyADecline(SandboxChannel):  # one merchant's bad key would lower the channel's success rate
    def with_credentials(self, credentials):
        account = super().with_credentials(credentials)
        charge = account.charge

        def declined(req):
            try:
                return charge(req)
            except CredentialsRefused:
                return ChannelResult("failed", None, "authentication_failed", "the key was refused")
        account.charge = declined
        return account


class BlamesTheChannelForTheKey(SandboxChannel):  # nothing sent, yet counted against the channel's circuit
    def with_credentials(self, credentials):
        account = super().with_credentials(credentials)
        if any("\r" in value or "\n" in value for value in credentials.values()):
            def charge(req):
                raise ChannelUnavailable(f"channel {self.id}: cannot send that key")
            account.charge = charge
        return account


@pytest.fixture(scope="module")
def sandbox_url(tmp_path_factory):
    with sandbox_kit.sandbox(tmp_path_factory) as url:
        yield url


@pytest.mark.parametrize("adapter, check, needs", [
    (ForgetsTheKey, "test_every_change_carries_its_idempotency_key", "wire"),
    (DeclinesLoudly, "test_a_decline_is_a_failed_result_with_the_psps_code_not_an_exception", "channel"),
    (EchoesTheToken, "test_a_card_token_reaches_the_psp_and_nothing_else", "channel wire"),
    (KeepsWhatJSONCannot, "test_a_charge_that_succeeds_is_succeeded_with_the_channels_reference", "channel"),
    (CallsSilenceAFailure, "test_a_request_sent_and_never_answered_is_an_unknown_outcome", "silent"),
    (CallsSilenceAFailure, "test_a_connection_dropped_after_sending_is_an_unknown_outcome", "dropping"),
    (TrustsEveryCallback, "test_a_callback_nobody_signed_is_refused", "channel"),
    (DropsTheDispute, "test_a_chargeback_is_a_signed_dispute_notice_about_the_payment", "channel callbacks psp_url"),
    (NamesTheDispute, "test_a_chargeback_is_a_signed_dispute_notice_about_the_payment", "channel callbacks psp_url"),
    (LendsItsClient, "test_a_merchant_account_sends_its_credentials_and_the_channel_still_its_own", "wire"),
    (IgnoresTheCredentials, "test_a_merchant_account_sends_its_credentials_and_the_channel_still_its_own", "wire"),
    (IgnoresTheCredentials, "test_a_merchant_account_charges_and_a_key_the_psp_refuses_is_credentials_refused",
     "channel psp_url"),
    (TakesAWrongKeyForAnOutage, "test_a_merchant_account_charges_and_a_key_the_psp_refuses_is_credentials_refused",
     "channel psp_url"),
    (CallsARefusedKeyADecline, "test_a_merchant_account_charges_and_a_key_the_psp_refuses_is_credentials_refused",
     "channel psp_url"),
    (BlamesTheChannelForTheKey, "test_line_breaks_in_a_merchants_credentials_never_reach_the_wire", "wire"),
])
def test_the_kit_fails_an_adapter_that_breaks_the_contract(sandbox_url, adapter, check, needs):
    with Host() as wire, Host(answer=None) as silent, Host(answer=b"") as dropping, CallbackReceiver() as callbacks:
        for kit_of, passes in ((SandboxChannel, True), (adapter, False)):
            contract = type(f"Test{kit_of.__name__}", (sandbox_kit.TestSandboxChannel,), {"adapter": kit_of})()
            given = {"channel": contract.make_channel(sandbox_url), "wire": wire, "silent": silent,
                     "dropping": dropping, "callbacks": callbacks, "psp_url": sandbox_url}
            run = getattr(contract, check)
            if passes:
                run(*(given[name] for name in needs.split()))
            else:
                with pytest.raises((AssertionError, ChannelError)):
                    run(*(given[name] for name in needs.split()))
