"""Log in and Log out (not in the navigation)."""
from __future__ import annotations

import time
from urllib.parse import unquote, urlsplit

from flask import redirect, request, session, url_for
from flask_admin import BaseView, expose
from flask_login import login_user, logout_user
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from admin.views.base import ConsoleForm, ConsoleUser, password_mark
from app.domain.errors import AuthenticationFailed
from app.services import admin_users


class LoginForm(ConsoleForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=80)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never another site (an open redirect), never a header broken by
    a control character (a CR/LF was a 500), never a ``..`` that climbs out of /admin (to ``//host``)."""
    if target and target.isascii() and target.isprintable() and " " not in target and "\\" not in target:
        parts = urlsplit(target)
        path = unquote(parts.path)
        segments = path.split("/")[1:]
        if (not parts.scheme and not parts.netloc and (path == "/admin" or path.startswith("/admin/"))
                and "//" not in path and "." not in segments and ".." not in segments
                and path.isprintable() and "\\" not in path):
            return target
    return url_for("admin.index")


class LoginView(BaseView):
    def is_visible(self) -> bool:
        return False

    @expose("/", methods=("GET", "POST"))
    def index(self):
        form = LoginForm()
        error, status = None, 200
        if form.validate_on_submit():
            try:
                user = admin_users.authenticate(form.username.data, form.password.data, request.remote_addr)
            except admin_users.LoginThrottled as exc:
                error, status = exc.message, 429
            except AuthenticationFailed as exc:
                error, status = exc.message, 401
            else:
                session.clear()
                login_user(ConsoleUser(user))
                session["login_at"] = int(time.time())  # a session lasts SESSION_HOURS from here, however used
                session["password_mark"] = password_mark(user.password_hash)  # until the password changes
                return redirect(_safe_next(request.args.get("next")))
        elif request.method == "POST":
            error, status = "Enter a user name and a password.", 400
        response = self.render("admin/payrouter_login.html", form=form, error=error)
        return response, status


class LogoutView(BaseView):
    def is_visible(self) -> bool:
        return False

    @expose("/", methods=("GET", "POST"))
    def index(self):
        if request.method == "POST":  # CSRF-checked like every /admin POST
            logout_user()
            return redirect(url_for("console_login.index"))
        return self.render("admin/payrouter_logout.html")


def views() -> list:
    return [LoginView(name="Log in", endpoint="console_login", url="login"),
            LogoutView(name="Log out", endpoint="console_logout", url="logout")]
