"""The sandbox adapter passes the plugin kit (channels.testing), as every third-party adapter must:
its PSP is the sandbox over HTTP, whose outcomes are chosen by the amount (contract §4)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

import pytest
import urllib3

from channels.base import ChannelTimeout, ChannelUnavailable
from channels.sandbox.adapter import SandboxChannel
from channels.sandbox.server import SandboxServer
from channels.sandbox.testing import EXPLICIT_SECRETS, FAST_SANDBOX_OPTIONS, write_channels_file
from channels.testing import ChannelContract


class TestSandboxChannel(ChannelContract):
    adapter = SandboxChannel
    channel_id = "sandbox"
    secret = EXPLICIT_SECRETS["SANDBOX_SECRET"]
    outcomes = {"succeeded": 2500, "declined": 2551, "processing": 2552, "unknown": 2554, "refused": 2555,
                "disputed": 2558}
    operations = ("payment", "topup", "refund", "withdrawal")
    captures = True
    disputes = True

    def account_credentials(self, psp_url):
        return {"api_key": json.loads(urllib3.request("POST", f"{psp_url}/accounts").data)["api_key"]}

    @pytest.fixture(scope="class")
    @classmethod
    def psp_url(cls, tmp_path_factory):
        with sandbox(tmp_path_factory) as url:
            yield url


@contextmanager
def sandbox(tmp_path_factory) -> Iterator[str]:
    """The sandbox PSP over HTTP; no database here: it runs on the explicit secrets of its channels
    file's variables."""
    path = write_channels_file(tmp_path_factory.mktemp("kit") / "channels.yaml", "http://127.0.0.1:1", 400)
    with SandboxServer("127.0.0.1", 0, path, env=EXPLICIT_SECRETS, **FAST_SANDBOX_OPTIONS) as server:
        yield server.url


def test_fault_classes_never_overlap():
    assert not issubclass(ChannelTimeout, ChannelUnavailable) and not issubclass(ChannelUnavailable, ChannelTimeout)
