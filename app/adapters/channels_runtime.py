"""This process's channel instances, loaded once from the configured channels file."""
from __future__ import annotations

import threading

from app.adapters.channel_secrets import StoredChannelSecrets
from app.config import get_config
from channels.base import Channel
from channels.registry import ChannelRegistry, load_channels

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"  # PAYROUTER_PUBLIC_URL unset: `serve`'s default address
_lock = threading.Lock()
_registry: dict[str, ChannelRegistry] = {}


def registry() -> ChannelRegistry:
    config = get_config()
    path = str(config.channels_file)
    with _lock:
        if path not in _registry:
            check_live_channels()
            _registry[path] = load_channels(path, env=config.channel_env, stored=StoredChannelSecrets(config))
        return _registry[path]


def check_live_channels() -> None:
    """Refuse (ChannelConfigError) a channels file with a live channel whose secret is not in its
    environment variable: called where a process starts (app factory, worker, ``serve``) and
    before channels are loaded, so no process runs one on a derived or default secret."""
    from channels.config import read_channels_file
    from channels.modes import require_live_secrets

    config = get_config()
    require_live_secrets(read_channels_file(config.channels_file, config.channel_env), config.channel_env)


def prepare() -> ChannelRegistry:
    """Where a process starts (app factory, worker): refuse a live channel without its secret, and
    load the channels now, so a test channel's missing generated secret is created in a transaction
    of its own, never from inside a request's (on SQLite that transaction holds the only write lock,
    and the nested insert waited for it until ``database is locked``)."""
    with _lock:  # registry() checks before it loads; a process whose channels are loaded checks again
        loaded = str(get_config().channels_file) in _registry
    if loaded:
        check_live_channels()
    return registry()


def channel(channel_id: str) -> Channel:
    return registry().get(channel_id)


def callback_url(channel_id: str) -> str:
    """Where a channel posts its callbacks for us: PAYROUTER_PUBLIC_URL + /callbacks/<id>."""
    base = get_config().public_url or DEFAULT_PUBLIC_URL
    return f"{base.rstrip('/')}/callbacks/{channel_id}"


def reset() -> None:
    with _lock:
        _registry.clear()
