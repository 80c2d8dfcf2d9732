"""The "Webhooks" page: every merchant's endpoints, deliveries newest first (by endpoint, status,
event), "Redeliver" (ops)."""
from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask_admin import expose

from admin.audit import current_actor
from admin.views.base import SecureView, role_required, user_can
from app.domain.errors import PayRouterError
from app.services import webhook_admin


class WebhooksView(SecureView):
    @expose("/")
    def index(self):
        args = request.args
        endpoint = (args.get("endpoint") or "").strip() or None
        status = (args.get("status") or "").strip() or None
        event = (args.get("event") or "").strip() or None
        try:
            deliveries, after = webhook_admin.list_deliveries(endpoint=endpoint, status=status, event=event,
                                                              after=args.get("after") or None)
        except PayRouterError as exc:
            flash(exc.message, "error")
            deliveries, after = [], None
        query = {k: v for k, v in args.items() if k != "after" and v}
        return self.render("admin/payrouter_webhooks.html", endpoints=webhook_admin.endpoints(),
                           deliveries=deliveries, after=after, query=query, endpoint=endpoint or "",
                           status=status or "", event=event or "", statuses=webhook_admin.DELIVERY_STATUSES,
                           can_redeliver=user_can("ops"))

    @expose("/redeliver", methods=("POST",))
    @role_required("ops")
    def redeliver(self):
        redeliver_from_form()
        return redirect(request.referrer or url_for(".index"))


def redeliver_from_form() -> None:
    """A "Redeliver" button's form (this page's and an operation's timeline): queue the delivery
    again as the signed-in user, and say what came of it."""
    delivery = (request.form.get("delivery") or "").strip()
    try:
        created = webhook_admin.redeliver(delivery, current_actor(), request.form.get("reason") or None)
    except PayRouterError as exc:
        flash(exc.message, "error")
    else:
        flash(f"Redelivery {created['id']} of {delivery} queued.", "success")


def views() -> list:
    return [WebhooksView(name="Webhooks", endpoint="console_webhooks", url="webhooks")]
