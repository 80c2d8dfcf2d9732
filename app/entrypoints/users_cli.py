"""``payrouter user …``: the admin console's users (create, list, disable, enable, set-role,
set-password), each change audited as ``cli:<os user>``."""
from __future__ import annotations

import getpass
import json
import sys

import click

ROLES = ("viewer", "ops", "pm", "admin")


def _actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        return "cli"


def _run(fn, *args, **kwargs):
    from app.domain.errors import PayRouterError

    try:
        return fn(*args, **kwargs)
    except PayRouterError as exc:
        raise click.ClickException(exc.message) from None


def _password(password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.ClickException("no password on standard input")
        return password
    return click.prompt("Password", hide_input=True, confirmation_prompt="Repeat the password")


@click.group("user")
def user():
    """Admin console users and their roles: viewer, ops, pm, admin."""


@user.command("create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(ROLES), help="what the user may do in the console")
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of standard input")
def user_create(name, role, password_stdin):
    """Create a console user (the password is prompted for twice, or read with --password-stdin)."""
    from app.services import admin_users

    password = _password(password_stdin)
    created = _run(admin_users.create_user, name, password, role, _actor())
    click.echo(f"user {created.username} created, role {created.role}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def user_list(as_json):
    """Every console user, its role and whether it is disabled."""
    from app.services import admin_users

    rows = [admin_users.representation(u) for u in admin_users.list_users()]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(f"{row['username']:<30} {row['role']:<7} {'disabled' if row['disabled'] else 'active'}")


@user.command("disable")
@click.argument("name")
@click.option("--reason", default=None, help="why (kept in the audit log)")
def user_disable(name, reason):
    """Disable a user: they cannot log in, and an open session ends at its next request."""
    from app.services import admin_users

    _run(admin_users.set_disabled, name, True, _actor(), reason)
    click.echo(f"user {name} disabled")


@user.command("enable")
@click.argument("name")
@click.option("--reason", default=None, help="why (kept in the audit log)")
def user_enable(name, reason):
    """Enable a disabled user again."""
    from app.services import admin_users

    _run(admin_users.set_disabled, name, False, _actor(), reason)
    click.echo(f"user {name} enabled")


@user.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@click.option("--reason", default=None, help="why (kept in the audit log)")
def user_set_role(name, role, reason):
    """Change a user's role (effective at their next request)."""
    from app.services import admin_users

    _run(admin_users.set_role, name, role, _actor(), reason)
    click.echo(f"user {name} is now {role}")


@user.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of standard input")
def user_set_password(name, password_stdin):
    """Set a user's password (prompted for twice, or read with --password-stdin)."""
    from app.services import admin_users

    _run(admin_users.set_password, name, _password(password_stdin), _actor())
    click.echo(f"password of {name} changed")


COMMANDS = [user]
