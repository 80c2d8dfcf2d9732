"""The "Rules" page (contract §5): the live set, a draft with Validate / Diff / Simulate / Replay,
Publish with a reason (a confirmation when live rules are dropped; with PAYROUTER_RULES_APPROVAL=1
another pm/admin approves), History with who/when/reason/diff and Roll back; for the platform's set
or, chosen at the top ("Rule set"), one merchant's own.

Replay runs as a job on the batch queue (its worker process does the work): the page shows it
running, and admin/static/rules_replay.js fetches the result from ``/replay/<job>`` when it is done,
leaving the draft as typed.

Everyone who may see the console may look and try (validate, diff, simulate and replay change
nothing); publishing, approving and rolling back need ``pm`` (or admin). The work is done by
app.services.rules_workspace / rules_publishing, which also write the audit log.
"""
from __future__ import annotations

import json

from flask import abort, flash, redirect, render_template, request, url_for
from flask_admin import expose

from admin.audit import current_actor
from admin.views.base import SecureView, role_required, user_can
from app.domain.errors import NotFound, PayRouterError
from app.domain.kinds import OperationKind
from app.domain.money import format_money
from app.entrypoints.app_config import app_config
from app.services import rules_publishing, rules_replay, rules_workspace

EXAMPLE_BODY = {"amount": 150000, "currency": "USD",
                "payment_method": {"type": "card", "brand": "visa", "country": "US", "last4": "4242"},
                "customer": {"id": "cus_1", "country": "US"}}
TRIES = ("validate", "diff", "simulate", "replay")


class RulesView(SecureView):
    roles = ()  # every role reads; the actions below say who may change

    def _page(self, *, status: int = 200, **state):
        merchant = _owner()
        try:
            live = rules_workspace.show(merchant=merchant)
            history = rules_publishing.history(merchant)
            pending = rules_publishing.pending(merchant)
        except PayRouterError as exc:
            flash(exc.message, "error")
            merchant = None
            live, history, pending = (rules_workspace.show(), rules_publishing.history(),
                                      rules_publishing.pending())
        form = {"source": live["source"], "kind": "payment", "sim_merchant": "",
                "body": json.dumps(EXAMPLE_BODY, indent=2), "last": "100", "reason": ""}
        form.update({k: v for k, v in request.form.items() if k in form})
        source_lines = form["source"].splitlines()
        return self.render("admin/payrouter_rules.html", live=live, history=history, pending=pending, form=form,
                           merchant=merchant, owners=rules_workspace.merchants_with_sets(), source_lines=source_lines,
                           kinds=OperationKind.routed(), can_change=user_can("pm"), me=current_actor(),
                           approval=app_config().rules_approval, **state), status

    @expose("/")
    def index(self):
        return self._page()

    @expose("/try", methods=("POST",))
    def try_draft(self):
        """Validate, Diff, Simulate or Replay the draft (no change anywhere)."""
        action = request.form.get("action")
        source = _draft()
        if action not in TRIES:
            flash("Choose Validate, Diff, Simulate or Replay.", "error")
            return self._page(status=400)
        merchant = _owner()
        state: dict = {"action": action}
        try:
            state["problems"] = problems = rules_workspace.validate(source, merchant)
            if action == "diff":
                state["diff"] = rules_workspace.diff(source, merchant)
            elif action == "simulate" and not problems:
                state["simulation"] = rules_workspace.simulate(
                    source, request.form.get("kind", "payment"), _json_body(request.form.get("body", "")),
                    (request.form.get("sim_merchant") or "").strip() or None, draft_owner=merchant, money=format_money)
            elif action == "replay" and not problems:
                job = rules_replay.start_replay(source, _int(request.form.get("last"), 100), merchant)
                state["replay_job"] = url_for(".replay_result", job=job)
        except PayRouterError as exc:
            state["error"] = exc.message
        return self._page(**state)

    @expose("/replay/<job>")
    def replay_result(self, job):
        """A replay's result as a fragment of the page: 202 while it runs, 200 with its counts."""
        try:
            found = rules_replay.replay_status(job)
        except NotFound:
            abort(404)
        except PayRouterError:
            abort(503)
        status = 200 if found["status"] in ("finished", "failed") else 202
        return render_template("admin/payrouter_rules_replay.html", job=found,
                               poll=url_for(".replay_result", job=job)), status

    @expose("/publish", methods=("POST",))
    @role_required("pm")
    def publish(self):
        source = _draft()
        confirm = request.form.get("confirm_dropped") == "1"
        try:
            result = rules_publishing.publish(source, current_actor(), request.form.get("reason"),
                                              confirm_dropped=confirm, merchant=_owner())
        except rules_publishing.DropsLiveRules as exc:
            return self._page(action="publish", confirm_dropped=exc.extra.get("dropped", []), status=409)
        except PayRouterError as exc:
            problems = getattr(exc, "problems", None)
            state = {"problems": [rules_workspace.problem_dict(p) for p in problems]} if problems else {}
            return self._page(action="publish", error=exc.message, status=400, **state)
        if result["status"] == "pending":
            flash(f"Request {result['request']} awaits approval by another pm or admin.", "info")
        else:
            flash(f"Published version {result['version']}: it is live.", "success")
        _warn_channels_not_run(source)
        return _back()

    @expose("/approve", methods=("POST",))
    @role_required("pm")
    def approve(self):
        return self._decide(rules_publishing.approve, "approved and published")

    @expose("/reject", methods=("POST",))
    @role_required("pm")
    def reject(self):
        return self._decide(lambda number, actor: rules_publishing.reject(number, actor, request.form.get("note")),
                            "rejected")

    def _decide(self, fn, done: str):
        number = _id(request.form.get("request"))
        try:
            result = fn(number, current_actor())
        except PayRouterError as exc:
            flash(exc.message, "error")
            status = 403 if isinstance(exc, rules_publishing.SelfApproval) else 409
            return self._page(status=status)
        version = f" as version {result['version']}" if result.get("version") else ""
        flash(f"Request {number} {done}{version}.", "success")
        if result.get("source"):  # approved: live now, warned about as a publish is
            _warn_channels_not_run(result["source"])
        return _back()

    @expose("/rollback", methods=("POST",))
    @role_required("pm")
    def rollback(self):
        version = _id(request.form.get("version"))
        try:
            result = rules_publishing.rollback(version, current_actor(), request.form.get("reason"), _owner())
        except PayRouterError as exc:  # as a publish of its text: a channel no longer stored is refused
            flash(exc.message, "error")
            return _back()
        flash(f"Rolled back: version {version} is live.", "success")
        _warn_channels_not_run(result["source"])
        return _back()


def _warn_channels_not_run(source: str) -> None:
    """As ``payrouter rules publish`` warns (and exits 3): each channel the set names that a live
    process runs without (it could not build it), flashed as a warning; the set is published all the
    same (nothing to undo)."""
    lacking = rules_publishing.channels_not_run_words(source)
    if lacking is None:
        flash("Not checked that the live processes run the channels this set names: their channel builds "
              "could not be read (Redis).", "warning")
    for words in lacking or []:
        flash(f"Warning: {words} (the Channels page says why).", "warning")


def _owner() -> str | None:
    """Whose rule set the page is about: the platform's (blank) or a merchant's (``merchant``)."""
    return (request.values.get("merchant") or "").strip() or None


def _back():
    merchant = _owner()
    return redirect(url_for(".index", merchant=merchant) if merchant else url_for(".index"))


def _draft() -> str:
    """The draft as typed: always text. The rules reader takes a one-line string ending in .yaml,
    .yml or .json as a file name (for the CLI), so a draft "/etc/x.yaml" read that server file
    (its keys came back as problems; "no such rule file" told which files exist)."""
    source = request.form.get("source", "")
    return source if source.endswith("\n") else source + "\n"


def _json_body(text: str) -> dict:
    from app.services.validation import parse_json

    body = parse_json(text.encode())
    if not isinstance(body, dict):
        raise rules_workspace.InvalidRequest("the body must be a JSON object", param="body")
    return body


MAX_ID = 2 ** 31 - 1  # versions and request numbers are INTEGER columns: a larger one is none of them


def _int(text, default: int) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def _id(text) -> int:
    """A version or request number as typed, 0 (none) unless it is 1..MAX_ID (40 nines were a 500)."""
    number = _int(text, 0)
    return number if 0 < number <= MAX_ID else 0


def views() -> list:
    return [RulesView(name="Rules", endpoint="console_rules", url="rules")]
