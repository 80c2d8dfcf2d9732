"""The "Switches" page: each degradation switch in words ("Channel acq_alpha: disabled since …,
by …, because …"), "Disable"/"Enable", "Pause"/"Resume" (read-only: "Turn on"/"Turn off") with a
required reason, and the history of changes. ops and admin act; viewer and pm read (403 on acting).
Everything here is app.services.switchboard, which the CLI uses too; changes are audited there."""
from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask_admin import expose
from wtforms import HiddenField, StringField
from wtforms.validators import AnyOf, DataRequired, Length

from admin.audit import current_actor
from admin.views.base import ConsoleForm, SecureView, role_required, user_can
from app.domain.errors import PayRouterError
from app.services import switchboard


class SwitchForm(ConsoleForm):
    name = HiddenField(validators=[DataRequired()])
    on = HiddenField(validators=[AnyOf(("1", "0"))])
    reason = StringField("Reason", validators=[DataRequired(message="a reason is required"),
                                               Length(max=switchboard.REASON_MAX)])


class SwitchesView(SecureView):
    @expose("/")
    def index(self):
        name = (request.args.get("name") or "").strip() or None
        try:
            history = switchboard.history(name, limit=100)
        except PayRouterError as exc:
            flash(exc.message, "error")
            name, history = None, switchboard.history(limit=100)
        return self.render("admin/payrouter_switches.html", board=switchboard.board(), history=history,
                           only=name, can_change=user_can("ops"), form=SwitchForm(formdata=None))

    @expose("/change", methods=("POST",))
    @role_required("ops")
    def change(self):
        form = SwitchForm()
        if not form.validate():
            flash("A change needs a reason.", "error")
            return redirect(url_for(".index"))
        try:
            entry = switchboard.change(form.name.data, form.on.data == "1", current_actor(), form.reason.data)
        except PayRouterError as exc:
            flash(exc.message, "error")
        else:
            flash(entry["words"], "success")
        return redirect(url_for(".index"))


def views() -> list:
    return [SwitchesView(name="Switches", endpoint="console_switches", url="switches")]
