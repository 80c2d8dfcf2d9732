"""The "Audit log" page (every role; placeholder until it lands)."""
from __future__ import annotations

from admin.views.placeholder import PlaceholderView


def views() -> list:
    return [PlaceholderView(name="Audit log", endpoint="console_audit", url="audit")]
