"""Echo Pay's adapter against the router's plugin kit (channels.testing), with Echo Pay's fake as its PSP."""
import pytest
from channels.testing import ChannelContract

from payrouter_channel_echo import EchoChannel
from payrouter_channel_echo.psp import EchoPSP


class TestEchoChannel(ChannelContract):
    adapter = EchoChannel
    channel_id = "echo"
    secret = "echo-kit-secret"
    # The last two digits of the amount choose Echo Pay's answer (payrouter_channel_echo.psp).
    outcomes = {"succeeded": 1000, "declined": 1001, "processing": 1002, "unknown": 1003, "refused": 1005}
    operations = ("payment", "refund")

    @pytest.fixture(scope="class")
    @classmethod
    def psp_url(cls):
        with EchoPSP(cls.secret, hold_s=1.5, notify_delay_s=0.1) as psp:
            yield psp.url
