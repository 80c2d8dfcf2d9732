"""Loading the channels file, resolving adapters (entry points, module:Class) and secrets."""
from __future__ import annotations

import importlib.metadata
import sys
import textwrap
import types

import pytest

from channels.base import Channel, ChannelResult
from channels.config import ChannelConfigError, UnknownChannel, read_channels_file
from channels.registry import ENTRY_POINT_GROUP, load_channels, resolve_adapter
from channels.sandbox.adapter import SandboxChannel


class ThirdPartyChannel(Channel):
    """What an external package would ship."""

    def charge(self, req):
        return ChannelResult("succeeded", "tp_1")

    def query(self, reference, channel_reference=None):
        return ChannelResult("succeeded", "tp_1")

    def verify_callback(self, headers, body):
        raise NotImplementedError


def write(tmp_path, text: str):
    path = tmp_path / "channels.yaml"
    path.write_text(textwrap.dedent(text))
    return path


ONE = """\
channels:
  - id: {id}
    adapter: "{adapter}"
    methods: [card]
    currencies: [USD]
    operations: [payment, refund]
    cost: {{percent: "1.8", fixed: 20}}
    timeout_ms: 250
    config: {{base_url: "${{MY_URL:-http://127.0.0.1:1}}", secret_env: TP_SECRET}}
"""


def installed_entry_point(monkeypatch, ep: importlib.metadata.EntryPoint) -> None:
    """``ep`` as if an installed package declared it in group payrouter.channels."""
    real = importlib.metadata.entry_points

    def fake_entry_points(**selection):
        if selection.get("group") == ENTRY_POINT_GROUP:
            return importlib.metadata.EntryPoints([ep]).select(**selection)
        return real(**selection)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)


def generated(spec) -> str:
    """Stands in for the database's generated secrets (app.adapters.channel_secrets)."""
    return f"generated-{spec.id}"


def test_default_file_has_the_three_sandbox_channels():
    registry = load_channels(env={}, stored=generated)
    assert registry.ids() == ["sandbox", "acq_alpha", "acq_beta"]
    assert all(isinstance(c, SandboxChannel) for c in registry)
    assert registry.get("acq_alpha").methods == ("card", "wallet")
    assert registry.get("acq_beta").currencies == ("USD", "EUR", "GBP")
    assert set(registry.get("sandbox").currencies) == {"USD", "EUR", "GBP", "JPY", "KWD", "CNY"}
    assert registry.get("sandbox").client.base_url == "http://127.0.0.1:8090"
    assert registry.get("acq_alpha").secret == "generated-acq_alpha"
    with pytest.raises(UnknownChannel):
        registry.get("nope")


def test_sandbox_url_and_secrets_come_from_env():
    env = {"PAYROUTER_SANDBOX_URL": "http://sbx:9", "ACQ_ALPHA_SECRET": "s3cret"}
    registry = load_channels(env=env, stored=generated)
    assert registry.get("acq_beta").client.base_url == "http://sbx:9"
    assert registry.get("acq_alpha").secret == "s3cret"
    assert registry.get("acq_beta").secret == "generated-acq_beta"


def test_no_secret_is_derived_when_none_is_configured_or_stored():
    """The derived development secret is gone: without its variable and without a store of generated
    secrets, a channel has no secret and is refused."""
    with pytest.raises(ChannelConfigError, match="SANDBOX_SECRET"):
        load_channels(env={})


def test_capability_filter_keeps_order_and_names_reasons():
    registry = load_channels(env={}, stored=generated)
    kept, dropped = registry.filter(["acq_alpha", "acq_beta", "sandbox", "ghost"], "payment", "GBP", "card")
    assert kept == ["acq_beta", "sandbox"]
    assert dropped == [{"channel": "acq_alpha", "reason": "unsupported_currency"},
                       {"channel": "ghost", "reason": "unknown_channel"}]
    assert registry.supports("acq_beta", "payment", "USD", "wallet") == "unsupported_method"


def test_module_class_path_adapter(tmp_path):
    path = write(tmp_path, ONE.format(id="tp", adapter=f"{__name__}:ThirdPartyChannel"))
    registry = load_channels(path, env={"TP_SECRET": "x", "MY_URL": "http://h"})
    ch = registry.get("tp")
    assert type(ch).__name__ == "ThirdPartyChannel" and ch.secret == "x"
    assert ch.spec.config["base_url"] == "http://h" and ch.timeout_ms == 250
    assert ch.cost.fee(1000) == 38


def test_third_party_entry_point_adds_a_channel(tmp_path, monkeypatch):
    """A package declaring an entry point in group payrouter.channels: no project file changes."""
    module = types.ModuleType("acme_payrouter_plugin")
    module.AcmeChannel = type("AcmeChannel", (ThirdPartyChannel,), {})
    monkeypatch.setitem(sys.modules, "acme_payrouter_plugin", module)
    ep = importlib.metadata.EntryPoint("acme", "acme_payrouter_plugin:AcmeChannel", ENTRY_POINT_GROUP)
    installed_entry_point(monkeypatch, ep)
    path = write(tmp_path, ONE.format(id="acme_one", adapter="acme"))
    registry = load_channels(path, env={"TP_SECRET": "x"})
    assert type(registry.get("acme_one")).__name__ == "AcmeChannel"
    assert resolve_adapter("sandbox") is SandboxChannel  # built-in still resolves


def test_third_party_adapter_needs_its_secret(tmp_path):
    path = write(tmp_path, ONE.format(id="tp", adapter=f"{__name__}:ThirdPartyChannel"))
    with pytest.raises(ChannelConfigError, match="TP_SECRET"):
        load_channels(path, env={})
    assert load_channels(path, env={}, stored=generated).get("tp").secret == "generated-tp"


@pytest.mark.parametrize("adapter,message", [
    ("nonexistent", "unknown adapter 'nonexistent'"),
    ("no_such_module_xyz:Thing", "cannot import module"),
    ("channels.base:Nope", "has no 'Nope'"),
    ("channels.base:ChannelResult", "does not resolve to a channels.base.Channel subclass"),
])
def test_bad_adapters_fail_clearly(tmp_path, adapter, message):
    path = write(tmp_path, ONE.format(id="tp", adapter=adapter))
    with pytest.raises(ChannelConfigError, match=message):
        load_channels(path, env={"TP_SECRET": "x"})


class RefusingChannel(ThirdPartyChannel):
    """A plugin whose constructor rejects a value of its definition with a plain ValueError."""

    def __init__(self, spec, secret):
        raise ValueError(f"not an http(s) URL: {spec.config['base_url']!r}")


class InterruptedChannel(ThirdPartyChannel):
    def __init__(self, spec, secret):
        raise KeyboardInterrupt


def test_an_adapter_constructor_raising_any_exception_is_a_channel_config_error(tmp_path):
    """Attack a14 S1: a ValueError (or a plugin's bug) while one channel builds is that channel's
    ChannelConfigError (the runtime then leaves out that channel only); an interrupt is not caught."""
    path = write(tmp_path, ONE.format(id="tp", adapter=f"{__name__}:RefusingChannel"))
    with pytest.raises(ChannelConfigError, match=r"channel tp: adapter .*RefusingChannel.* refused its "
                                                 r"definition: ValueError: not an http\(s\) URL"):
        load_channels(path, env={"TP_SECRET": "x", "MY_URL": "acq.example.com:443"})
    path = write(tmp_path, ONE.format(id="tp", adapter=f"{__name__}:InterruptedChannel"))
    with pytest.raises(KeyboardInterrupt):
        load_channels(path, env={"TP_SECRET": "x"})


def test_the_sandbox_adapter_rejecting_a_url_without_scheme_is_a_channel_config_error(tmp_path):
    path = write(tmp_path, ONE.format(id="tp", adapter="sandbox"))
    with pytest.raises(ChannelConfigError, match="channel tp: .*ValueError: .*not an http"):
        load_channels(path, env={"TP_SECRET": "x", "MY_URL": "acq.example.com:443"})


def test_an_entry_point_or_module_whose_code_raises_is_a_channel_config_error(tmp_path, monkeypatch):
    ep = importlib.metadata.EntryPoint("broken", "broken_payrouter_plugin:Channel", ENTRY_POINT_GROUP)
    installed_entry_point(monkeypatch, ep)
    (tmp_path / "broken_payrouter_plugin.py").write_text('raise RuntimeError("boom")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_payrouter_plugin", raising=False)
    with pytest.raises(ChannelConfigError, match="adapter 'broken': entry point failed to load: RuntimeError: boom"):
        resolve_adapter("broken")
    with pytest.raises(ChannelConfigError, match="importing module 'broken_payrouter_plugin' failed: "
                                                 "RuntimeError: boom"):
        resolve_adapter("broken_payrouter_plugin:Channel")


@pytest.mark.parametrize("text,message", [
    ("channels: []", r"channels: \[\] should be non-empty"),
    ("channels:\n  - id: a\n    adapter: sandbox\n", "channels\\[0\\]: 'methods' is a required property"),
    (ONE.format(id="a", adapter="sandbox").replace("[USD]", "[usd]"), r"channels\[0\].currencies\[0\]"),
    (ONE.format(id="a", adapter="sandbox").replace("[USD]", "[XXX]"), "unknown currency XXX"),
    (ONE.format(id="a", adapter="sandbox").replace("[card]", "[Card]"), r"channels\[0\].methods\[0\]"),
    (ONE.format(id="a", adapter="sandbox").replace('"1.8"', "1.8"), r"channels\[0\].cost.percent"),
    (ONE.format(id="a", adapter="sandbox") + ONE.format(id="a", adapter="sandbox").replace("channels:\n", ""),
     "duplicate channel id 'a'"),
    ("channels: [", "not valid YAML"),
])
def test_invalid_files_fail_with_a_clear_path(tmp_path, text, message):
    with pytest.raises(ChannelConfigError, match=message):
        read_channels_file(write(tmp_path, text), env={})


def test_missing_file_and_env_default(tmp_path):
    with pytest.raises(ChannelConfigError, match="cannot read channels file"):
        read_channels_file(tmp_path / "missing.yaml", env={})
    path = write(tmp_path, ONE.format(id="from_env", adapter="sandbox"))
    assert [s.id for s in read_channels_file(env={"PAYROUTER_CHANNELS": str(path)})] == ["from_env"]


def test_unset_variable_without_default_is_an_error(tmp_path):
    path = write(tmp_path, ONE.format(id="a", adapter="sandbox").replace(":-http://127.0.0.1:1", ""))
    with pytest.raises(ChannelConfigError, match="MY_URL is not set"):
        read_channels_file(path, env={})
