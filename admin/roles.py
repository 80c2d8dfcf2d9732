"""Console roles (contract §5): viewer reads everything; ops steers switches, channels, circuit
breakers, reconciliation issues and webhook redelivery; pm edits and publishes rules; admin manages
users and may do everything the others may."""
from __future__ import annotations

VIEWER, OPS, PM, ADMIN = "viewer", "ops", "pm", "admin"
ROLES = (VIEWER, OPS, PM, ADMIN)


def allows(role: str | None, *needed: str) -> bool:
    """Whether a user of ``role`` may do what needs one of ``needed`` (admin may do anything;
    no ``needed`` role, or viewer: any logged-in user)."""
    if role not in ROLES:
        return False
    if role == ADMIN or not needed or VIEWER in needed:
        return True
    return role in needed
