"""The one audit writer (contract §5): every change made by an operator — console, CLI — is one row
of ``audit_log``: who, when, what (action), on which object (target), before, after, why (reason).

``record`` adds the row to the caller's session, so it commits or rolls back with the change it
describes. Console pages import it as ``admin.audit.record`` (with ``admin.audit.current_actor()``).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app import context
from app.adapters.models import AuditLog, utcnow


def record(session: Session, *, actor: str, action: str, target: str, before: Any = None, after: Any = None,
           reason: str | None = None) -> AuditLog:
    """Add one audit row to ``session`` (flushed with it)."""
    if not actor:
        raise ValueError("an audited change needs its actor")
    row = AuditLog(actor=actor[:200], action=action[:100], target=target[:200], before=before, after=after,
                   reason=reason[:1000] if reason else None, request_id=context.current_request_id(),
                   created_at=utcnow())
    session.add(row)
    return row
