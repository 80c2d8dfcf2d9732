"""The "Users" page (admins only; placeholder until it lands)."""
from __future__ import annotations

from admin.views.placeholder import PlaceholderView


class UsersView(PlaceholderView):
    roles = ("admin",)


def views() -> list:
    return [UsersView(name="Users", endpoint="console_users", url="users")]
