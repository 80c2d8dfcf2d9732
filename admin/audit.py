"""The audit helper every console page uses (implemented once, in app.services.audit):

    from admin import audit
    with unit_of_work() as session:
        ...change...
        audit.record(session, actor=audit.current_actor(), action="rules.publish", target="rules:platform",
                     before={...}, after={...}, reason=form.reason.data)

``app.services.switches.set`` writes the same table with the same fields.
"""
from __future__ import annotations

import getpass

from app.services.audit import record

__all__ = ["record", "current_actor"]


def current_actor() -> str:
    """The logged-in console user's name, or ``cli:<os user>`` outside a console request."""
    from flask import has_request_context
    from flask_login import current_user

    if has_request_context() and current_user.is_authenticated:
        return current_user.username
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in this environment
        return "cli"
