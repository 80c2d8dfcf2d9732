"""The "Transactions" page: search operations and transfers (id, reference, order, customer, status, kind,
channel, merchant, dates), and an operation's page: its timeline, with "Redeliver" on its webhook
deliveries (ops)."""
from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta

from flask import flash, redirect, request, url_for
from flask_admin import expose

from admin.views.base import SecureView, role_required, user_can
from admin.views.webhooks import redeliver_from_form
from app.domain.errors import NotFound, PayRouterError
from app.domain.kinds import OperationKind
from app.services import search, timeline

FIELDS = ("id", "reference", "order", "customer", "status", "kind", "channel", "merchant")


def _day(name: str, shift: int = 0) -> datetime | None:
    """A date field of the form as the start of that day (``shift``: days later), naive UTC."""
    value = (request.args.get(name) or "").strip()
    try:
        return datetime.combine(date.fromisoformat(value), time()) + timedelta(days=shift) if value else None
    except ValueError:
        flash(f"{name}: not a date (YYYY-MM-DD)", "error")
        return None
    except OverflowError:  # the day after 9999-12-31: no bound
        return None


def pretty(value) -> str:
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False, default=str)


class TransactionsView(SecureView):
    @expose("/")
    def index(self):
        args = request.args
        if payment_id := search.disputed_payment(args.get("id")):  # a dispute's id: its payment's page
            return redirect(url_for(".operation", object_id=payment_id))
        criteria = search.Criteria(**{f: args.get(f) or None for f in FIELDS}, since=_day("from"),
                                   until=_day("to", shift=1))
        searched = any(args.get(f) for f in (*FIELDS, "from", "to"))
        results, error = None, None
        try:
            results = search.search(criteria, limit=50, after=args.get("after") or None)
        except PayRouterError as exc:
            error = exc.message
        query = {k: v for k, v in args.items() if k != "after" and v}
        return self.render("admin/payrouter_transactions.html", results=results, error=error, args=args,
                           query=query, searched=searched, kinds=OperationKind.values(), statuses=search.STATUSES)

    @expose("/<object_id>")
    def operation(self, object_id: str):
        try:
            story = timeline.timeline(object_id)
        except NotFound as exc:
            return self.render("admin/payrouter_error.html", status=404, title="Not found",
                               message=exc.message), 404
        return self.render("admin/payrouter_operation.html", story=story, pretty=pretty,
                           can_redeliver=user_can("ops"))

    @expose("/<object_id>/redeliver", methods=("POST",))
    @role_required("ops")
    def redeliver(self, object_id: str):
        redeliver_from_form()
        return redirect(url_for(".operation", object_id=object_id))


def views() -> list:
    return [TransactionsView(name="Transactions", endpoint="console_transactions", url="transactions")]
