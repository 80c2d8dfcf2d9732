"""The "Dashboard" page: the console's home at /admin/ (placeholder until its charts land)."""
from __future__ import annotations

from flask_admin import expose

from admin.views.base import SecureIndexView


class DashboardView(SecureIndexView):
    @expose("/")
    def index(self):
        return self.render("admin/payrouter_placeholder.html")


def index_view():
    return DashboardView(name="Dashboard", url="/admin", endpoint="admin")
