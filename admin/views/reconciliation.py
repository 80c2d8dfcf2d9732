"""The "Reconciliation" page: runs and issues newest first; "Resolve" with a required note (ops)."""
from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask_admin import expose
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length

from admin.audit import current_actor
from admin.views.base import ConsoleForm, SecureView, role_required, user_can
from app.domain.errors import PayRouterError
from app.services import issues, reconciliation_admin


class ResolveForm(ConsoleForm):
    issue = HiddenField(validators=[DataRequired()])
    note = StringField("Note", validators=[DataRequired(message="a resolution needs a note"), Length(max=1000)])


class ReconciliationView(SecureView):
    @expose("/")
    def index(self):
        args = request.args
        status = args.get("status", "open")
        channel = (args.get("channel") or "").strip() or None
        kind = args.get("kind") or None
        try:
            found, issues_after = reconciliation_admin.issue_list(status=None if status == "all" else status,
                                                                  channel=channel, kind=kind,
                                                                  after=args.get("issues_after"))
            runs, runs_after = reconciliation_admin.runs(channel=channel, with_issues=args.get("with_issues") == "1",
                                                         limit=20, after=args.get("runs_after"))
        except PayRouterError as exc:
            flash(exc.message, "error")
            return redirect(url_for(".index"))
        query = {k: v for k, v in args.items() if k not in ("issues_after", "runs_after") and v}
        return self.render("admin/payrouter_reconciliation.html", issues=found, issues_after=issues_after,
                           runs=runs, runs_after=runs_after, status=status, channel=channel or "", query=query,
                           kind=kind or "", kinds=issues.KINDS,
                           can_resolve=user_can("ops"), form=ResolveForm(formdata=None))

    @expose("/resolve", methods=("POST",))
    @role_required("ops")
    def resolve(self):
        form = ResolveForm()
        if not form.validate():
            flash("Resolve needs a note.", "error")
            return redirect(request.referrer or url_for(".index"))
        try:
            reconciliation_admin.resolve(form.issue.data, form.note.data.strip(), current_actor())
        except PayRouterError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Issue {form.issue.data} resolved.", "success")
        return redirect(url_for(".index"))


def views() -> list:
    return [ReconciliationView(name="Reconciliation", endpoint="console_reconciliation", url="reconciliation")]
