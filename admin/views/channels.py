"""The "Channels" page: each channel's mode, switch, circuit (closed, open — by hand or by the
breaker — or half-open), success rate, p95 latency and volume over the last 15 minutes; "Open
circuit"/"Close circuit" with a required reason. ops and admin act; viewer and pm read (403 on
acting). Below, each running process's channel definitions version and any build failure
(app.adapters.channel_builds). Everything here is app.services.channels, which ``payrouter channels list`` and
``payrouter channel open-circuit|close-circuit`` use too; changes are audited there."""
from __future__ import annotations

from flask import flash, redirect, url_for
from flask_admin import expose
from wtforms import HiddenField, StringField
from wtforms.validators import AnyOf, DataRequired, Length

from admin.audit import current_actor
from admin.views.base import ConsoleForm, SecureView, role_required, user_can
from app.domain.errors import PayRouterError
from app.services import channels
from app.services.switchboard import REASON_MAX


class CircuitForm(ConsoleForm):
    channel = HiddenField(validators=[DataRequired()])
    action = HiddenField(validators=[AnyOf(("open", "close"))])
    reason = StringField("Reason", validators=[DataRequired(message="a reason is required"), Length(max=REASON_MAX)])


class ChannelsView(SecureView):
    @expose("/")
    def index(self):
        return self.render("admin/payrouter_channels.html", channels=channels.board(), builds=channels.processes(),
                           can_change=user_can("ops"), form=CircuitForm(formdata=None))

    @expose("/circuit", methods=("POST",))
    @role_required("ops")
    def circuit(self):
        form = CircuitForm()
        if not form.validate():
            flash("Opening or closing a circuit needs a reason.", "error")
            return redirect(url_for(".index"))
        act = channels.open_circuit if form.action.data == "open" else channels.close_circuit
        try:
            circuit = act(form.channel.data, current_actor(), form.reason.data)
        except PayRouterError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Circuit of {form.channel.data}: {channels.circuit_words(circuit)}", "success")
        return redirect(url_for(".index"))


def views() -> list:
    return [ChannelsView(name="Channels", endpoint="console_channels", url="channels")]
