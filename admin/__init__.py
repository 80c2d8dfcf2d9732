"""The admin console (issue #12): Flask-Admin at /admin, mounted by app.entrypoints.web.create_app.

``init_admin(app)`` sets up sessions (Flask-Login), CSRF (Flask-WTF, on every /admin form) and the
pages listed in ``admin.views.PAGES`` (see admin/views/__init__.py for how a page registers).
"""
from __future__ import annotations

import time

from flask import Blueprint, Flask, render_template, request, session
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect

from admin.views.base import AdminForbidden
from app.domain.money import format_money

URL = "/admin"
SESSION_HOURS = 12
csrf = CSRFProtect()
SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


# The console's own templates (admin/templates/admin/...) and static files, served at /admin/assets/
# (vendored libraries: no CDN, the console works with no internet).
assets = Blueprint("console_assets", __name__, template_folder="templates", static_folder="static",
                   static_url_path=URL + "/assets")


def init_admin(app: Flask) -> Admin:
    from app.config import APP_EXTENSION

    config = app.extensions[APP_EXTENSION]  # create_app attached it
    # SECRET_KEY (create_app): PAYROUTER_SECRET_KEY, or the install's random var/secret_key — never a constant.
    app.config.update(
        SESSION_COOKIE_NAME="payrouter_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.session_cookie_secure,
        SESSION_COOKIE_PATH=URL,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=config.session_cookie_secure,
        PERMANENT_SESSION_LIFETIME=SESSION_HOURS * 3600,
        WTF_CSRF_CHECK_DEFAULT=False,  # checked below for /admin only: /v1, /callbacks, /ops are not forms
        WTF_CSRF_TIME_LIMIT=SESSION_HOURS * 3600,
        WTF_CSRF_SSL_STRICT=config.session_cookie_secure,
    )
    csrf.init_app(app)
    app.register_blueprint(assets)
    # ``{{ amount | money(currency) }}``: every amount the console shows, in major units (2052 USD → 20.52 USD).
    app.add_template_filter(format_money, "money")
    _login_manager(app)

    @app.before_request
    def _admin_csrf():
        if not (request.path == URL or request.path.startswith(URL + "/")):
            return None
        posted = request.method not in SAFE_METHODS
        if posted:
            csrf.protect()
        if _holds_nul(request.args) or (posted and _holds_nul(request.form)):
            # no console field has a use for one, and PostgreSQL text cannot hold it (it was a 500 there)
            return render_template("admin/payrouter_error.html", status=400, title="Bad request",
                                   message="A field holds a NUL character.", admin_base_template=_BASE), 400
        return None

    @app.after_request
    def _not_framed(response):
        if request.path == URL or request.path.startswith(URL + "/"):
            # no other site may frame the console and trick a click on Disable, Approve or Change role
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            if not request.path.startswith((URL + "/assets/", URL + "/static/")):
                response.headers.setdefault("Cache-Control", "no-store")  # operations' data: not in any cache
        return response

    @app.errorhandler(CSRFError)
    def _csrf_refused(error):
        return render_template("admin/payrouter_error.html", status=400, title="Form expired or forged",
                               message="The form was refused: its CSRF token is missing or invalid. "
                                       "Reload the page and try again.", admin_base_template=_BASE), 400

    @app.errorhandler(AdminForbidden)
    def _forbidden(error):
        return render_template("admin/payrouter_error.html", status=403, title="Forbidden",
                               message=error.description, admin_base_template=_BASE), 403

    from admin import views

    console = Admin(app, name="PayRouter", url=URL, index_view=views.index_view(),
                    theme=Bootstrap4Theme(base_template=_BASE, swatch="default"))
    for view in views.all_views():
        console.add_view(view)
    return console


_BASE = "admin/payrouter_master.html"


def _holds_nul(values) -> bool:
    return any("\x00" in key or any("\x00" in value for value in values.getlist(key)) for key in values)


def _login_manager(app: Flask) -> None:
    from admin.views.base import ConsoleUser, password_mark
    from app.services import admin_users

    manager = LoginManager()
    manager.login_view = "console_login.index"
    manager.login_message = None
    manager.session_protection = "basic"
    manager.init_app(app)

    @manager.user_loader
    def _load(user_id: str):
        try:
            user = admin_users.get_by_id(int(user_id))
        except (TypeError, ValueError):
            return None
        if user is None or user.disabled:  # disabled: logged out at the next request
            return None
        if not 0 <= time.time() - session.get("login_at", 0) <= SESSION_HOURS * 3600:
            return None  # a session (even a copied cookie) ends SESSION_HOURS after its log-in
        if session.get("password_mark") != password_mark(user.password_hash):
            return None  # the password changed since this log-in (a copied cookie too)
        return ConsoleUser(user)
