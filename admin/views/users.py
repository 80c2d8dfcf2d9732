"""The "Users" page (admins only): create a user, change a role, disable or enable; every change audited."""
from __future__ import annotations

from flask import flash, redirect, url_for
from flask_admin import expose
from wtforms import HiddenField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length

from admin.audit import current_actor
from admin.views.base import ConsoleForm, SecureView, role_required
from app.domain.errors import PayRouterError
from app.services import admin_users

ROLE_CHOICES = list(admin_users.ROLES)  # each its own label (WTForms deprecates (value, label) tuples)


class CreateUserForm(ConsoleForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=80)])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=admin_users.MIN_PASSWORD, max=1024)])
    role = SelectField("Role", choices=ROLE_CHOICES, default="viewer")


class ChangeUserForm(ConsoleForm):
    username = HiddenField(validators=[DataRequired()])
    role = SelectField("Role", choices=ROLE_CHOICES)
    reason = StringField("Reason", validators=[Length(max=1000)])


class UsersView(SecureView):
    roles = ("admin",)

    @expose("/")
    def index(self):
        users = admin_users.list_users()
        forms = {u.username: ChangeUserForm(role=u.role, formdata=None) for u in users}
        return self.render("admin/payrouter_users.html", users=users, forms=forms,
                           create_form=CreateUserForm(formdata=None, prefix="new"), me=current_actor())

    def _done(self, fn, *args, message: str):
        try:
            fn(*args)
        except PayRouterError as exc:
            flash(exc.message, "error")
        else:
            flash(message, "success")
        return redirect(url_for(".index"))

    @expose("/create", methods=("POST",))
    @role_required("admin")
    def create(self):
        form = CreateUserForm(prefix="new")
        if not form.validate():
            flash("; ".join(f"{form[name].label.text}: {' '.join(errs)}" for name, errs in form.errors.items()),
                  "error")
            return redirect(url_for(".index"))
        return self._done(admin_users.create_user, form.username.data.strip(), form.password.data, form.role.data,
                          current_actor(), message=f"User {form.username.data.strip()} created.")

    @expose("/role", methods=("POST",))
    @role_required("admin")
    def set_role(self):
        form = ChangeUserForm()
        if not form.validate():
            flash("Choose a role.", "error")
            return redirect(url_for(".index"))
        return self._done(admin_users.set_role, form.username.data, form.role.data, current_actor(),
                          form.reason.data or None, message=f"{form.username.data} is now {form.role.data}.")

    @expose("/disable", methods=("POST",))
    @role_required("admin")
    def disable(self):
        form = ChangeUserForm()
        if form.username.data == current_actor():
            flash("You cannot disable yourself.", "error")
            return redirect(url_for(".index"))
        return self._done(admin_users.set_disabled, form.username.data, True, current_actor(),
                          form.reason.data or None, message=f"{form.username.data} disabled.")

    @expose("/enable", methods=("POST",))
    @role_required("admin")
    def enable(self):
        form = ChangeUserForm()
        return self._done(admin_users.set_disabled, form.username.data, False, current_actor(),
                          form.reason.data or None, message=f"{form.username.data} enabled.")


def views() -> list:
    return [UsersView(name="Users", endpoint="console_users", url="users")]
