"""The plugin kit (contract §4): the contract test every channel adapter passes, ours and a third party's.

A plugin's test module subclasses ``ChannelContract`` in a class named ``Test…``, names its adapter,
says where its PSP (or a fake of it) answers and which amounts bring which outcome there::

    import pytest
    from channels.testing import ChannelContract
    from my_channel import FakePSP, MyChannel

    class TestMyChannel(ChannelContract):
        adapter = MyChannel
        secret = "kit-secret"              # the secret the PSP (fake) knows this channel by
        outcomes = {"succeeded": 1000, "declined": 1001, "processing": 1002, "unknown": 1003, "refused": 1005}

        @pytest.fixture(scope="class")
        @classmethod
        def psp_url(cls):
            with FakePSP(secret=cls.secret) as psp:
                yield psp.url

and pytest runs every check of ``ChannelContract`` against it (docs/channels.md explains each).
Outcomes, by the amount (minor units) that brings them at the PSP; ``succeeded`` and ``declined``
are required, the others are checked when given:

- ``succeeded``: succeeded at once; ``declined``: failed at once, with the PSP's code;
- ``processing``: pending, then a signed callback with the final status to the request's ``callback_url``;
- ``unknown``: no answer within the channel's ``timeout_ms`` (the operation exists at the PSP);
- ``refused``: HTTP 5xx, and nothing charged;
- ``disputed`` (with ``disputes = True``): succeeded, then a signed dispute callback (a DisputeNotice).

An adapter that checks merchant accounts' credentials (``verify_credentials``) also gives
``account_credentials(self, psp_url)``: credentials its PSP takes; the kit then checks that they
are taken, forged ones refused (``CredentialsRefused``) and a PSP that cannot answer is a fault.
An adapter that declares ``credential_fields`` (merchants' own accounts) is checked with made-up
credentials on the kit's hosts, and with ``account_credentials`` (when given) at the PSP.
"""
from __future__ import annotations

import pytest

# The contract's asserts explain their failures as a test module's do (pytest rewrites them on import).
pytest.register_assert_rewrite("channels.testing.contract", "channels.testing.wire")

from channels.testing.contract import ChannelContract  # noqa: E402, F401
from channels.testing.hosts import CallbackReceiver, Host, closed_url  # noqa: E402, F401
