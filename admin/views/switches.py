"""The "Switches" page (placeholder until its page lands)."""
from __future__ import annotations

from admin.views.placeholder import PlaceholderView


def views() -> list:
    return [PlaceholderView(name="Switches", endpoint="console_switches", url="switches")]
