"""The "Audit log" page: every change, newest first, filtered by user, object, action and date;
readable by every role."""
from __future__ import annotations

import json
from datetime import date

from flask import request
from flask_admin import expose

from admin.views.base import SecureView
from app.services import audit_log

MAX_ID = 2 ** 31 - 1


def _date(name: str) -> date | None:
    value = (request.args.get(name) or "").strip()
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _pretty(value) -> str:
    return "" if value is None else json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False, default=str)


class AuditLogView(SecureView):
    @expose("/")
    def index(self):
        args = request.args
        filters = audit_log.Filters(actor=(args.get("user") or "").strip() or None,
                                    target=(args.get("object") or "").strip() or None,
                                    action=(args.get("action") or "").strip() or None,
                                    since=_date("from"), until=_date("to"))
        try:
            before_id = int(args["before"]) if args.get("before") else None
        except ValueError:
            before_id = None
        if before_id is not None and not 0 < before_id <= MAX_ID:  # an INTEGER column: 40 nines were a 500
            before_id = None
        rows, next_before = audit_log.search(filters, before_id)
        entries = [{"row": r, "before": _pretty(r.before), "after": _pretty(r.after),
                    "changed": audit_log.changed_keys(r.before, r.after)} for r in rows]
        query = {k: v for k, v in args.items() if k != "before" and v}
        return self.render("admin/payrouter_audit.html", entries=entries, filters=filters, query=query,
                           next_before=next_before, actors=audit_log.actors())


def views() -> list:
    return [AuditLogView(name="Audit log", endpoint="console_audit", url="audit")]
