"""The "Dashboard" page, the console's home at /admin/: per channel, volume and success rate over
the last 24 h; declines by code; the webhook backlog; open reconciliation issues. Drawn by Chart.js
(MIT, vendored in admin/static/vendor/chartjs/: no CDN); the same figures are in tables beside."""
from __future__ import annotations

from flask_admin import expose

from admin.views.base import SecureIndexView
from app.services import dashboard


class DashboardView(SecureIndexView):
    @expose("/")
    def index(self):
        return self.render("admin/payrouter_dashboard.html", figures=dashboard.data())


def index_view():
    return DashboardView(name="Dashboard", url="/admin", endpoint="admin")
