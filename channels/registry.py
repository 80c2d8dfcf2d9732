"""Channel instances by id, built from the channels file.

An ``adapter`` is either the name of an entry point in group ``payrouter.channels``
(a third-party package adds one without any project file changing) or a
``"package.module:Class"`` path. Built-in adapters also resolve from a source checkout
where the package is not installed (no entry points registered).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
from typing import Iterator, Mapping

from channels.base import Channel
from channels.config import (
    ChannelConfigError,
    ChannelSpec,
    StoredSecrets,
    UnknownChannel,
    read_channels_file,
    resolve_secret,
)

ENTRY_POINT_GROUP = "payrouter.channels"
BUILTIN_ADAPTERS = {"sandbox": "channels.sandbox.adapter:SandboxChannel"}


def _import_path(path: str) -> type:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ChannelConfigError(f"adapter {path!r}: cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:  # the module itself fails at import (its code raises): the same channel problem
        raise ChannelConfigError(f"adapter {path!r}: importing module {module_name!r} failed: "
                                 f"{exc.__class__.__name__}: {exc}") from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise ChannelConfigError(f"adapter {path!r}: module {module_name!r} has no {attr!r}") from exc
    return obj


def resolve_adapter(name: str) -> type[Channel]:
    """The Channel subclass for an adapter name or ``module:Class`` path."""
    if ":" in name:
        cls = _import_path(name)
    else:
        found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
        if found:
            try:
                cls = next(iter(found)).load()
            except Exception as exc:  # ImportError, AttributeError, or whatever the package's code raises
                raise ChannelConfigError(f"adapter {name!r}: entry point failed to load: "
                                         f"{exc.__class__.__name__}: {exc}") from exc
        elif name in BUILTIN_ADAPTERS:
            cls = _import_path(BUILTIN_ADAPTERS[name])
        else:
            known = sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
                           | set(BUILTIN_ADAPTERS))
            raise ChannelConfigError(
                f"unknown adapter {name!r}: not an entry point of group {ENTRY_POINT_GROUP} "
                f"(known: {', '.join(known)}) nor a 'package.module:Class' path")
    if not (isinstance(cls, type) and issubclass(cls, Channel)):
        raise ChannelConfigError(f"adapter {name!r} does not resolve to a channels.base.Channel subclass")
    return cls


def build_channel(spec: ChannelSpec, env: Mapping[str, str] | None = None,
                  stored: StoredSecrets | None = None) -> Channel:
    """Instantiate one channel: resolve its adapter class and its secret (``stored``: where a test
    channel's generated secret is read, see channels.config.resolve_secret). Whatever the adapter's
    own code raises while it builds (a ValueError for a value it rejects, a plugin's bug) is a
    ChannelConfigError naming the channel: that channel cannot be built, the others can."""
    cls = resolve_adapter(spec.adapter)
    secret = resolve_secret(spec, env, stored, required=cls.needs_secret)
    try:
        return cls(spec, secret)
    except ChannelConfigError:
        raise
    except Exception as exc:  # never BaseException: an interrupt or an exit is not a channel's problem
        raise ChannelConfigError(f"channel {spec.id}: adapter {spec.adapter!r} refused its definition: "
                                 f"{exc.__class__.__name__}: {exc}") from exc


def needs_secret(spec: ChannelSpec) -> bool:
    """Does the channel's adapter take a secret? (An adapter that cannot be resolved is said to:
    building the channel then says what is wrong with it.)"""
    try:
        return resolve_adapter(spec.adapter).needs_secret
    except ChannelConfigError:
        return True


class ChannelRegistry:
    """The configured channel instances, in file order."""

    def __init__(self, channels: list[Channel]):
        self._channels = {c.id: c for c in channels}

    def get(self, channel_id: str) -> Channel:
        try:
            return self._channels[channel_id]
        except KeyError:
            raise UnknownChannel(f"no channel {channel_id!r} is configured") from None

    def all(self) -> list[Channel]:
        return list(self._channels.values())

    def ids(self) -> list[str]:
        return list(self._channels)

    def methods(self) -> set[str]:
        """Every payment method some channel declares (of either mode)."""
        return {method for channel in self._channels.values() for method in channel.spec.methods}

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._channels

    def __iter__(self) -> Iterator[Channel]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self._channels)

    def supports(self, channel_id: str, operation: str, currency: str, method: str | None = None) -> str | None:
        """None if the channel can carry it, else a drop reason (``unknown_channel``,
        ``channel_disabled``, ``unsupported_operation|currency|method``)."""
        channel = self._channels.get(channel_id)
        if channel is None:
            return "unknown_channel"
        if not channel.spec.enabled:
            return "channel_disabled"
        return channel.supports(operation, currency, method)

    def filter(self, candidates: list[str], operation: str, currency: str, method: str | None = None):
        """Split candidate ids into (kept ids, dropped [{"channel", "reason"}]), order kept."""
        kept, dropped = [], []
        for cid in candidates:
            reason = self.supports(cid, operation, currency, method)
            if reason:
                dropped.append({"channel": cid, "reason": reason})
            else:
                kept.append(cid)
        return kept, dropped


def load_channels(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                  stored: StoredSecrets | None = None) -> ChannelRegistry:
    """Read the channels file (default ``PAYROUTER_CHANNELS`` or channels/channels.yaml) into a registry."""
    specs = read_channels_file(path, env)
    return ChannelRegistry([build_channel(spec, env, stored) for spec in specs])
