"""Channels: the adapter interface (base), the registry of configured instances, and adapters.

Public API: ``load_channels(path) -> ChannelRegistry`` and the types in ``channels.base``; for an
adapter's author, ``channels.http`` (sending requests) and ``channels.testing`` (the plugin kit, the
contract test every adapter passes): docs/channels.md.
"""
from channels.base import (  # noqa: F401
    CallbackEvent,
    Channel,
    ChannelResult,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRequest,
    InvalidCallback,
    OperationNotSupported,
    PayoutRequest,
    RefundRequest,
    StatementLine,
)
from channels.config import ChannelConfigError, ChannelSpec, Cost, UnknownChannel  # noqa: F401
from channels.registry import ChannelRegistry, load_channels, resolve_adapter  # noqa: F401
