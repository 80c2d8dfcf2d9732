"""Console pages, one module per page, in navigation order.

How a page registers: its module (admin/views/<page>.py, named in ``PAGES``) defines

    def views() -> list[BaseView]:
        return [RulesView(name="Rules", endpoint="console_rules", url="rules")]

returning NEW view instances on every call (each app gets its own). Endpoints are
``console_<page>`` (Flask blueprint names are shared with the API: "webhooks" is taken). A view subclasses
``admin.views.base.SecureView`` (or ``SecureModelView``), sets ``roles`` to who may see it (empty:
every logged-in role), guards actions with ``@role_required("pm")`` (403 otherwise), uses
``ConsoleForm`` (or ``csrf_token()``) for forms, records changes with ``admin.audit.record`` and
calls services, never raw SQL. Its templates live in admin/templates/admin/<page>*.html and extend
``admin_base_template``. The Dashboard is the home page: dashboard.py's ``index_view()``.
"""
from __future__ import annotations

import importlib

PAGES = ("rules", "switches", "channels", "transactions", "reconciliation", "webhooks", "users", "audit")


def index_view():
    from admin.views import dashboard

    return dashboard.index_view()


def all_views() -> list:
    from admin.views import login

    found = list(login.views())
    for page in PAGES:
        found.extend(importlib.import_module(f"admin.views.{page}").views())
    return found
