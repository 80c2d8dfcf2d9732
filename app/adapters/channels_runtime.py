"""This process's channel instances, loaded once from the configured channels file."""
from __future__ import annotations

import os
import threading

from app.adapters.channel_secrets import StoredChannelSecrets
from app.config import get_config
from channels.base import Channel
from channels.registry import ChannelRegistry, load_channels

_lock = threading.Lock()
_registry: dict[str, ChannelRegistry] = {}


def registry() -> ChannelRegistry:
    path = str(get_config().channels_file)
    with _lock:
        if path not in _registry:
            check_live_channels()
            _registry[path] = load_channels(path, stored=StoredChannelSecrets())
        return _registry[path]


def check_live_channels() -> None:
    """Refuse (ChannelConfigError) a channels file with a live channel whose secret is not in its
    environment variable: called where a process starts (app factory, worker, ``serve``) and
    before channels are loaded, so no process runs one on a derived or default secret."""
    from channels.config import read_channels_file
    from channels.modes import require_live_secrets

    require_live_secrets(read_channels_file(get_config().channels_file))


def prepare() -> ChannelRegistry:
    """Where a process starts (app factory, worker): refuse a live channel without its secret, and
    load the channels now, so a test channel's missing generated secret is created in a transaction
    of its own, never from inside a request's (on SQLite that transaction holds the only write lock,
    and the nested insert waited for it until ``database is locked``)."""
    check_live_channels()
    return registry()


def channel(channel_id: str) -> Channel:
    return registry().get(channel_id)


def callback_url(channel_id: str) -> str:
    """Where a channel posts its callbacks for us: PAYROUTER_PUBLIC_URL + /callbacks/<id>."""
    base = get_config().public_url or os.environ.get("PAYROUTER_PUBLIC_URL") or "http://127.0.0.1:8000"
    return f"{base.rstrip('/')}/callbacks/{channel_id}"


def reset() -> None:
    with _lock:
        _registry.clear()
