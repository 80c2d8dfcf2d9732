"""A page not built yet: its owner replaces the module's ``views()`` with the real page."""
from __future__ import annotations

from flask_admin import expose

from admin.views.base import SecureView


class PlaceholderView(SecureView):
    @expose("/")
    def index(self):
        return self.render("admin/payrouter_placeholder.html")
