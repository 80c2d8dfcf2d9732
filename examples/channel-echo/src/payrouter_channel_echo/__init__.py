"""A PayRouter channel adapter for Echo Pay (``adapter: echo`` in a channels file), and Echo Pay's fake."""
from payrouter_channel_echo.adapter import EchoChannel  # noqa: F401
