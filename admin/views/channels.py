"""The "Channels" page (placeholder until its page lands)."""
from __future__ import annotations

from admin.views.placeholder import PlaceholderView


def views() -> list:
    return [PlaceholderView(name="Channels", endpoint="console_channels", url="channels")]
