"""What every console page builds on.

- ``SecureView``: a Flask-Admin ``BaseView`` that needs a logged-in user (else: the log-in page) and,
  to be seen at all, one of ``roles`` (empty: every role; admin always) — else 403.
- ``role_required("ops")``: on an exposed method (an action), 403 unless the user has that role
  (or admin). Roles: viewer, ops, pm, admin (admin/roles.py).
- ``SecureModelView``: the same for a read-only Flask-Admin ``ModelView`` (sqla).
- ``ConsoleForm``: a Flask-WTF form (its ``{{ form.csrf_token }}`` or ``{{ form.hidden_tag() }}``
  carries the CSRF token). A plain HTML form adds
  ``<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">``. Every POST under /admin
  without a valid token is refused (400), whatever the view.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Callable

from flask import redirect, request, url_for
from flask_admin import AdminIndexView, BaseView
from flask_login import UserMixin, current_user
from flask_wtf import FlaskForm
from werkzeug.exceptions import Forbidden

from admin import roles as _roles


class AdminForbidden(Forbidden):
    """A console page or action beyond the user's role (rendered as an HTML 403 page)."""


class ConsoleUser(UserMixin):
    """The logged-in user, as read at the start of this request."""

    def __init__(self, user):
        self.id, self.username, self.role = user.id, user.username, user.role

    def can(self, *roles: str) -> bool:
        return _roles.allows(self.role, *roles)


def password_mark(password_hash: str) -> str:
    """What a session keeps of its user's password hash (keyed, so the readable cookie tells nothing
    of it): a new password — ``payrouter user set-password`` after a leak — ends every older session."""
    from flask import current_app

    key = current_app.secret_key
    key = key.encode() if isinstance(key, str) else key
    return hmac.new(key, password_hash.encode(), hashlib.sha256).hexdigest()[:32]


class ConsoleForm(FlaskForm):
    """Base class of every console form: Flask-WTF's CSRF token included."""


def user_can(*roles: str) -> bool:
    return current_user.is_authenticated and _roles.allows(current_user.role, *roles)


def _refuse(roles: tuple[str, ...]):
    if not current_user.is_authenticated:
        back = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("console_login.index", next=back))
    needed = [role for role in roles if role != _roles.ADMIN]
    named = f"{' or '.join(needed)} (or admin)" if needed else "admin"  # never "admin (or admin)"
    raise AdminForbidden(f"This needs the role {named}; you are {current_user.role}.")


def role_required(*roles: str) -> Callable:
    """Decorate an exposed view method: 403 unless the logged-in user has one of ``roles`` (admin: all)."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if not user_can(*roles):
                return _refuse(roles)
            return fn(*args, **kwargs)

        inner.required_roles = roles
        return inner

    return wrap


class _Secure:
    roles: tuple[str, ...] = ()  # who may see the page (empty: every logged-in user)

    def is_accessible(self) -> bool:
        return user_can(*self.roles)

    def inaccessible_callback(self, name, **kwargs):
        return _refuse(self.roles or (_roles.VIEWER,))


class SecureView(_Secure, BaseView):
    """A console page: ``@expose("/")`` methods; ``self.render("admin/<page>.html", ...)``."""


class SecureIndexView(_Secure, AdminIndexView):
    """The console's home page (the Dashboard)."""


try:
    from flask_admin.contrib.sqla import ModelView as _ModelView

    class SecureModelView(_Secure, _ModelView):
        """A read-only list of a model (create/edit/delete off unless a subclass turns them on, with
        ``roles`` set to who may do it)."""

        can_create = can_edit = can_delete = False
        form_base_class = ConsoleForm
        page_size = 50
except ImportError:  # pragma: no cover - Flask-Admin's sqla extra ships with it
    SecureModelView = None
