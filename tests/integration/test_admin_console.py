"""The admin console without a browser (Flask test client): log-in, roles → 403, CSRF on every
/admin form, log-in throttling, session cookies and key, the Users and Audit log pages, and the
`payrouter user …` commands."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from app.adapters.db import unit_of_work
from app.adapters.models import AdminLoginFailure, AdminUser, AuditLog, utcnow
from app.config import DEV_SECRET_KEY
from app.domain.errors import AuthenticationFailed
from app.entrypoints.cli import main
from app.services import admin_users
from tests import builders

PASSWORD = "correct horse battery"


def token(response) -> str:
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', response.get_data(as_text=True))
    assert found, response.get_data(as_text=True)[:500]
    return found.group(1)


def user(role: str, name: str | None = None) -> str:
    name = name or builders.unique(role)
    admin_users.create_user(name, PASSWORD, role, actor="test")
    return name


def log_in(client, name: str, password: str = PASSWORD, environ: dict | None = None):
    page = client.get("/admin/login/")
    return client.post("/admin/login/", data={"username": name, "password": password, "csrf_token": token(page)},
                       environ_base=environ or {})


def logged_in(app, role: str):
    client = app.test_client()
    name = user(role)
    assert log_in(client, name).status_code == 302
    return client, name, token(client.get("/admin/"))


def audit_rows(target: str) -> list[AuditLog]:
    with unit_of_work() as session:
        return list(session.scalars(select(AuditLog).where(AuditLog.target == target).order_by(AuditLog.id)))


# -- log-in, roles -----------------------------------------------------------------------------------

def test_the_console_needs_a_log_in_not_an_api_key(client):
    answer = client.get("/admin/")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/admin/login/")
    page = client.get("/admin/login/")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and ">Username<" in body and ">Password<" in body and ">Log in<" in body
    name = user("viewer")
    assert log_in(client, name, "wrong password").status_code == 401
    answer = log_in(client, name)
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/"
    home = client.get("/admin/").get_data(as_text=True)
    for page_name in ("Dashboard", "Rules", "Switches", "Channels", "Transactions", "Reconciliation", "Webhooks",
                      "Audit log", "Log out"):
        assert page_name in home
    assert ">Users<" not in home  # admins only
    assert client.get("/v1/accounts").status_code == 401  # the console session is no API key


def test_a_log_in_never_redirects_off_the_console(client):
    name = user("viewer")
    page = client.get("/admin/login/")
    answer = client.post("/admin/login/?next=https://evil.example/admin", data={
        "username": name, "password": PASSWORD, "csrf_token": token(page)})
    assert answer.headers["Location"] == "/admin/"


def test_roles_beyond_them_get_403(app):
    viewer, _, viewer_token = logged_in(app, "viewer")
    refused = viewer.get("/admin/users/")
    assert refused.status_code == 403
    assert "This needs the role admin; you are viewer." in refused.get_data(as_text=True)  # not "admin (or admin)"
    refused = viewer.post("/admin/rules/publish", data={"csrf_token": viewer_token, "reason": "x"})
    assert "This needs the role pm (or admin); you are viewer." in refused.get_data(as_text=True)
    assert viewer.post("/admin/users/create", data={"csrf_token": viewer_token, "new-username": "x",
                                                    "new-password": PASSWORD, "new-role": "admin"}).status_code == 403
    assert viewer.post("/admin/rules/publish", data={"csrf_token": viewer_token, "reason": "x"}).status_code == 403
    assert viewer.get("/admin/audit/").status_code == 200  # every role reads
    ops, _, ops_token = logged_in(app, "ops")
    assert ops.post("/admin/rules/publish", data={"csrf_token": ops_token, "reason": "x"}).status_code == 403
    assert ops.get("/admin/users/").status_code == 403
    pm, _, pm_token = logged_in(app, "pm")
    assert pm.post("/admin/rules/publish", data={"csrf_token": pm_token, "reason": "x"}).status_code != 403
    admin, _, _ = logged_in(app, "admin")
    assert admin.get("/admin/users/").status_code == 200
    with unit_of_work() as session:
        assert session.scalar(select(AdminUser).where(AdminUser.username == "x")) is None


def test_a_disabled_user_is_logged_out_and_cannot_log_in(app):
    client, name, _ = logged_in(app, "ops")
    assert client.get("/admin/switches/").status_code == 200
    admin_users.set_disabled(name, True, actor="test")
    assert client.get("/admin/switches/").status_code == 302
    assert log_in(app.test_client(), name).status_code == 401


def test_a_role_change_applies_at_the_next_request(app):
    client, name, _ = logged_in(app, "viewer")
    assert client.get("/admin/users/").status_code == 403
    admin_users.set_role(name, "admin", actor="test")
    assert client.get("/admin/users/").status_code == 200


def test_log_out_needs_the_form_and_ends_the_session(app):
    client, _, csrf = logged_in(app, "viewer")
    assert client.get("/admin/logout/").status_code == 200  # a page with the button; still logged in
    assert client.get("/admin/audit/").status_code == 200
    assert client.post("/admin/logout/").status_code == 400  # no token: refused
    answer = client.post("/admin/logout/", data={"csrf_token": csrf})
    assert answer.status_code == 302
    assert client.get("/admin/audit/").status_code == 302


# -- CSRF ------------------------------------------------------------------------------------------------

def test_every_console_form_needs_its_csrf_token(app):
    name = user("viewer")
    bare = app.test_client()
    refused = bare.post("/admin/login/", data={"username": name, "password": PASSWORD})
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)
    admin, _, csrf = logged_in(app, "admin")
    form = {"new-username": "made-without-token", "new-password": PASSWORD, "new-role": "viewer"}
    assert admin.post("/admin/users/create", data=form).status_code == 400
    assert admin.post("/admin/users/create", data={**form, "csrf_token": "forged"}).status_code == 400
    with unit_of_work() as session:
        assert session.scalar(select(AdminUser).where(AdminUser.username == "made-without-token")) is None
    assert admin.post("/admin/users/create", data={**form, "csrf_token": csrf}).status_code == 302
    with unit_of_work() as session:
        assert session.scalar(select(AdminUser).where(AdminUser.username == "made-without-token")) is not None


def test_the_api_callbacks_and_ops_take_no_csrf_token(client):
    api = builders.api(client)
    assert api.post("/v1/accounts", {"currency": "USD", "customer": {"id": "c1"}}).status_code == 201
    for path in ("/callbacks/sandbox", "/ops/switches"):
        assert "CSRF" not in client.post(path, data=b"{}").get_data(as_text=True)


# -- throttling ------------------------------------------------------------------------------------------

def test_repeated_failures_lock_the_user_name_even_for_the_right_password(client):
    name = user("pm")
    for _ in range(admin_users.USER_LIMIT):
        assert log_in(client, name, "wrong password").status_code == 401
    locked = log_in(client, name)
    assert locked.status_code == 429 and "Too many failed log-ins" in locked.get_data(as_text=True)
    assert log_in(client, user("pm")).status_code == 302  # another name from the same address: fine
    with unit_of_work() as session:  # the lock window passes
        session.execute(update(AdminLoginFailure).values(locked_until=utcnow() - timedelta(seconds=1)))
    assert log_in(client, name).status_code == 302


def test_the_lock_grows_with_each_further_failure(client):
    name = user("pm")
    for _ in range(admin_users.USER_LIMIT):
        log_in(client, name, "wrong password")
    with unit_of_work() as session:
        first = session.get(AdminLoginFailure, f"user:{name}").locked_until
        session.execute(update(AdminLoginFailure).values(locked_until=utcnow() - timedelta(seconds=1)))
    assert log_in(client, name, "wrong again").status_code == 401
    with unit_of_work() as session:
        second = session.get(AdminLoginFailure, f"user:{name}").locked_until
    assert (second - utcnow()).total_seconds() > (first - utcnow()).total_seconds() + 20  # 30 s, then 60 s


def test_a_name_no_user_can_have_is_refused_like_any_other(client):
    for name in ("a\x00b", "x" * 5000, ""):
        assert log_in(client, name, "wrong password").status_code in (400, 401), name
    page = client.get("/admin/login/")  # bytes that are not UTF-8
    answer = client.post("/admin/login/", data=f"username=%ff%fe&password=%ed%a0%80&csrf_token={token(page)}",
                         content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 401


def test_many_failures_from_one_address_lock_that_address(client):
    attacker = {"REMOTE_ADDR": "192.0.2.7"}
    for i in range(admin_users.ADDR_LIMIT):
        assert log_in(client, f"guess-{i}", "wrong password", attacker).status_code == 401
    name = user("viewer")
    assert log_in(client, name, PASSWORD, attacker).status_code == 429
    assert log_in(client, name, PASSWORD, {"REMOTE_ADDR": "192.0.2.8"}).status_code == 302


# -- sessions --------------------------------------------------------------------------------------------

def test_session_cookie_is_httponly_lax_and_signed_with_no_constant(client, app):
    answer = log_in(client, user("viewer"))
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert app.secret_key and app.secret_key != DEV_SECRET_KEY


def test_a_session_ends_twelve_hours_after_its_log_in_however_used(app):
    import time

    client, _, _ = logged_in(app, "viewer")
    with client.session_transaction(path="/admin/") as session:  # logged in 11 h 59 min ago, busy since
        session["login_at"] = int(time.time()) - 12 * 3600 + 60
    assert client.get("/admin/audit/").status_code == 200
    with client.session_transaction(path="/admin/") as session:
        session["login_at"] = int(time.time()) - 12 * 3600 - 60
    assert client.get("/admin/audit/").status_code == 302


def test_session_cookie_is_secure_when_served_on_https(clean):
    from app.entrypoints.web import create_app

    app = create_app(clean.with_(public_url="https://pay.example.com"))
    client = app.test_client()
    name = user("viewer")
    page = client.get("/admin/login/", base_url="https://localhost")
    answer = client.post("/admin/login/", base_url="https://localhost", headers={"Referer": "https://localhost/"},
                         data={"username": name, "password": PASSWORD, "csrf_token": token(page)})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    assert "Secure" in answer.headers["Set-Cookie"]


def test_passwords_are_stored_as_argon2id(clean):
    name = user("viewer")
    with unit_of_work() as session:
        stored = session.scalar(select(AdminUser.password_hash).where(AdminUser.username == name))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


# -- Users and Audit log pages --------------------------------------------------------------------------

def test_users_page_creates_changes_and_disables_and_each_is_audited(app):
    admin, me, csrf = logged_in(app, "admin")
    assert admin.post("/admin/users/create", data={"csrf_token": csrf, "new-username": "carol",
                                                   "new-password": PASSWORD, "new-role": "pm"}).status_code == 302
    admin.post("/admin/users/role", data={"csrf_token": csrf, "username": "carol", "role": "ops"})
    admin.post("/admin/users/disable", data={"csrf_token": csrf, "username": "carol", "reason": "left"})
    page = admin.get("/admin/users/").get_data(as_text=True)
    assert re.search(r'data-username="carol">.*?user-status">disabled', page, re.S)
    rows = audit_rows("user:carol")
    assert [(r.actor, r.action) for r in rows] == [(me, "user.create"), (me, "user.set_role"), (me, "user.disable")]
    assert rows[1].before["role"] == "pm" and rows[1].after["role"] == "ops"
    assert rows[2].before["disabled"] is False and rows[2].after["disabled"] is True and rows[2].reason == "left"
    # An admin cannot disable themself (the console would lose its last way in).
    admin.post("/admin/users/disable", data={"csrf_token": csrf, "username": me})
    assert audit_rows(f"user:{me}")[-1].action == "user.create"


def test_the_last_active_admin_cannot_be_demoted_or_disabled(clean):
    from app.domain.errors import Conflict

    first = user("admin")
    with pytest.raises(Conflict):
        admin_users.set_role(first, "viewer", actor="test")
    with pytest.raises(Conflict):
        admin_users.set_disabled(first, True, actor="test")
    second = user("admin")
    admin_users.set_role(first, "viewer", actor="test")  # another admin remains
    with pytest.raises(Conflict):
        admin_users.set_disabled(second, True, actor="test")


def test_audit_log_page_filters_by_user_object_and_date(app):
    from app.services import switches

    switches.set("channel:acq_beta", True, actor="alice", reason="flaky")
    switches.set("webhooks", True, actor="bob", reason="maintenance")
    viewer, _, _ = logged_in(app, "viewer")

    def entries(query: str) -> list[str]:
        page = viewer.get("/admin/audit/?" + query)
        assert page.status_code == 200
        return re.findall(r'data-object="([^"]+)"', page.get_data(as_text=True))

    assert entries("user=alice") == ["channel:acq_beta"]
    assert entries("object=webhooks") == ["webhooks"]
    assert entries("object=channel:*") == ["channel:acq_beta"]
    today = utcnow().date()
    assert set(entries(f"from={today}&to={today}")) >= {"channel:acq_beta", "webhooks"}
    assert entries(f"to={today - timedelta(days=1)}") == []
    page = viewer.get("/admin/audit/?object=channel:acq_beta").get_data(as_text=True)
    assert "flaky" in page and "&#34;on&#34;: true" in page


# -- CLI -------------------------------------------------------------------------------------------------

def test_cli_user_commands(clean):
    runner = CliRunner()
    made = runner.invoke(main, ["user", "create", "dana", "--role", "ops", "--password-stdin"], input=PASSWORD + "\n")
    assert made.exit_code == 0, made.output
    assert admin_users.authenticate("dana", PASSWORD, None).role == "ops"
    prompted = runner.invoke(main, ["user", "create", "erin", "--role", "pm"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    mismatch = runner.invoke(main, ["user", "create", "finn", "--role", "pm"],
                             input=f"{PASSWORD}\nsomething else\n{PASSWORD}\n{PASSWORD}\n")
    assert mismatch.exit_code == 0 and "match" in mismatch.output  # asked again until both agree
    assert runner.invoke(main, ["user", "create", "dana", "--role", "ops", "--password-stdin"],
                         input=PASSWORD + "\n").exit_code != 0  # taken
    assert runner.invoke(main, ["user", "create", "gil", "--role", "root", "--password-stdin"],
                         input=PASSWORD + "\n").exit_code != 0  # no such role
    assert runner.invoke(main, ["user", "create", "hal", "--role", "ops", "--password-stdin"],
                         input="short\n").exit_code != 0
    assert runner.invoke(main, ["user", "set-role", "dana", "admin"]).exit_code == 0
    assert runner.invoke(main, ["user", "disable", "erin", "--reason", "left"]).exit_code == 0
    listed = runner.invoke(main, ["user", "list", "--json"])
    by_name = {u["username"]: u for u in json.loads(listed.output)}
    assert by_name["dana"]["role"] == "admin" and by_name["erin"]["disabled"] is True
    with pytest.raises(AuthenticationFailed):
        admin_users.authenticate("erin", PASSWORD, None)
    assert runner.invoke(main, ["user", "disable", "nobody"]).exit_code != 0
    actions = [(r.action, r.actor.startswith("cli")) for r in audit_rows("user:dana")]
    assert actions == [("user.create", True), ("user.set_role", True)]
