"""Which channels take a merchant's credentials (app.services.channel_accounts), with a fake
registry in place of the configured channels: the checks refuse before anything is stored."""
import pytest

from app.domain.errors import InvalidRequest
from app.services import channel_accounts
from channels.base import Channel, OperationNotSupported
from channels.config import ChannelSpec
from channels.registry import ChannelRegistry
from channels.sandbox.adapter import SandboxChannel


class TakesNoCredentials(Channel):
    def charge(self, req):  # pragma: no cover - never called here
        raise NotImplementedError

    def query(self, reference, channel_reference=None):  # pragma: no cover
        raise NotImplementedError

    def verify_callback(self, headers, body):  # pragma: no cover
        raise NotImplementedError


def _spec(channel_id: str, mode: str = "test") -> ChannelSpec:
    return ChannelSpec(id=channel_id, adapter="sandbox", methods=("card",), currencies=("USD",),
                       operations=("payment",), mode=mode, config={"base_url": "http://127.0.0.1:1"})


@pytest.fixture
def channels(monkeypatch):
    registry = ChannelRegistry([TakesNoCredentials(_spec("plain"), "s"), SandboxChannel(_spec("sbx"), "s"),
                                SandboxChannel(_spec("sbx_live", "live"), "s")])
    monkeypatch.setattr("app.adapters.channels_runtime.registry", lambda: registry)
    return registry


@pytest.mark.parametrize("channel,livemode,code", [
    ("plain", False, "channel_accounts_unsupported"),
    ("sbx_live", False, "channel_mode_mismatch"),
    ("sbx", True, "channel_mode_mismatch"),
    ("nowhere", False, "channel_unknown"),
])
def test_a_channel_that_cannot_use_the_account_is_refused(channels, channel, livemode, code):
    with pytest.raises(InvalidRequest) as refused:
        channel_accounts.create(None, "mer_1", livemode, {"channel": channel, "credentials": {"api_key": "k"}})
    assert (refused.value.code, refused.value.param) == (code, "channel")


def test_an_adapter_without_credential_fields_refuses_to_act_for_an_account(channels):
    with pytest.raises(OperationNotSupported):
        channels.get("plain").with_credentials({"api_key": "k"})
    account = channels.get("sbx").with_credentials({"api_key": "sbxkey_1"})
    assert account.client.secret == "sbxkey_1" and channels.get("sbx").client.secret == "s"
    assert account.client.http is channels.get("sbx").client.http  # the channel's connections, shared
    assert "sbxkey_1" not in repr(account) + repr(account.client)
