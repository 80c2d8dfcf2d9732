"""The console attacked from outside (issue #12 review): what a merchant or a stranger controls comes
back escaped, bad input is a 4xx (never a 500, on SQLite and PostgreSQL), a log-in never redirects
anywhere but the console, and the console cannot be framed by another site (clickjacking)."""
from __future__ import annotations

import re

import pytest

from app.services import admin_users, rules_workspace
from tests import builders
from tests.integration.test_admin_tx_pages import PASSWORD, Console, _token

XSS = '<img src=x onerror=alert(1)>'


def _raw(page: str) -> list[str]:
    return re.findall(r"<img src=x|<script>alert", page)


def test_merchant_controlled_text_is_escaped_on_every_page(app, client):
    api = builders.api(client)
    body = builders.payment_body(1000, reference="r" + XSS, description="d" + XSS, metadata={"k" + XSS: "v" + XSS},
                                 customer={"id": "c" + XSS, "email": "a@b.c", "country": "US"})
    created = api.post("/v1/payments", body)
    assert created.status_code == 201, created.get_json()
    payment = created.get_json()["id"]
    admin = Console(app, "admin")
    for path in ("/admin/", "/admin/transactions/", f"/admin/transactions/?reference=r{XSS}",
                 f"/admin/transactions/{payment}", "/admin/webhooks/", "/admin/audit/", f"/admin/audit/?user={XSS}",
                 f"/admin/switches/?name={XSS}", f"/admin/rules/?merchant={XSS}", "/admin/reconciliation/"):
        page = admin.client.get(path).get_data(as_text=True)
        assert not _raw(page), path
    assert "&lt;img src=x" in admin.text(f"/admin/transactions/{payment}")


@pytest.mark.parametrize("cursor", ["9" * 40, str(2 ** 63)])
def test_an_audit_cursor_out_of_range_is_ignored_not_a_500(app, cursor):
    viewer = Console(app, "viewer")
    assert viewer.client.get(f"/admin/audit/?before={cursor}").status_code == 200


@pytest.mark.parametrize("path", ["/admin/audit/?to=9999-12-31", "/admin/transactions/?to=9999-12-31",
                                  "/admin/audit/?from=0001-01-01&to=9999-12-31",
                                  "/admin/transactions/?from=9999-12-31&to=9999-12-31"])
def test_the_last_day_there_is_as_an_upper_bound_is_no_500(app, path):
    """The day after 9999-12-31 is no date: it was an OverflowError (500) on both pages."""
    assert Console(app, "viewer").client.get(path).status_code == 200


@pytest.mark.parametrize("action", ["validate", "diff", "simulate", "replay"])
def test_a_draft_naming_a_server_file_is_text_not_that_file(app, tmp_path, action):
    secret = tmp_path / "channels.yaml"
    secret.write_text("channels:\n  - id: acq_x\n    secret: s3cr3t\n")
    viewer = Console(app, "viewer")
    token = _token(viewer.text("/admin/rules/"))
    for name in (str(secret), str(tmp_path / "missing.json")):
        page = viewer.client.post("/admin/rules/try", data={"csrf_token": token, "action": action,
                                                             "source": name}).get_data(as_text=True)
        assert "unknown top-level key" not in page and "no such rule file" not in page  # read as text
    pm = Console(app, "pm")
    token = _token(pm.text("/admin/rules/"))
    live = rules_workspace.show()["version"]
    pm.client.post("/admin/rules/publish", data={"csrf_token": token, "source": str(secret), "reason": "x",
                                                "confirm_dropped": "1"})
    assert rules_workspace.show()["version"] == live


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\nrules: *a8\n"  # 425 bytes, 9^9 values once expanded


@pytest.mark.timeout(60)
@pytest.mark.parametrize("draft, problem", [(_alias_bomb(), "values once its aliases are expanded"),
                                            ("rules: " + "[" * 600 + "]" * 600 + "\n", "nests lists or mappings"),
                                            ("rules: " + "{a: " * 40 + "[" * 40 + "]" * 40 + "}" * 40 + "\n",
                                             "nests lists or mappings")])
def test_a_draft_that_expands_or_nests_without_end_is_a_problem_not_a_hung_worker(app, draft, problem):
    """A viewer may validate: 425 bytes of aliases pinned a worker forever; 600 brackets were a 500."""
    viewer = Console(app, "viewer")
    token = _token(viewer.text("/admin/rules/"))
    answer = viewer.client.post("/admin/rules/try", data={"csrf_token": token, "action": "validate", "source": draft})
    assert answer.status_code == 200 and problem in answer.get_data(as_text=True)


@pytest.mark.parametrize("path, field", [("/admin/rules/rollback", "version"), ("/admin/rules/approve", "request"),
                                         ("/admin/rules/reject", "request")])
def test_a_rules_number_out_of_range_is_refused_not_a_500(app, path, field):
    pm = Console(app, "pm")
    token = _token(pm.text("/admin/rules/"))
    answer = pm.client.post(path, data={"csrf_token": token, field: "9" * 40, "reason": "why"})
    assert answer.status_code in (302, 400, 404, 409), answer.status_code


@pytest.mark.parametrize("last", ["-5", "9" * 40])
def test_a_replay_count_out_of_range_is_explained(app, last):
    pm = Console(app, "pm")
    token = _token(pm.text("/admin/rules/"))
    answer = pm.client.post("/admin/rules/try", data={"csrf_token": token, "action": "replay", "last": last,
                                                      "source": rules_workspace.show()["source"]})
    assert answer.status_code == 200 and "last must be an integer from 1 to" in answer.get_data(as_text=True)


@pytest.mark.parametrize("path, form", [
    ("/admin/switches/change", {"name": "channel:sandbox", "on": "1", "reason": "r\x00"}),
    ("/admin/channels/circuit", {"channel": "sandbox", "action": "open", "reason": "r\x00"}),
    ("/admin/webhooks/redeliver", {"delivery": "wd_\x00"}),
    ("/admin/transactions/pay_x/redeliver", {"delivery": "wd_\x00"}),
    ("/admin/reconciliation/resolve", {"issue": "ri_\x00", "note": "n"}),
    ("/admin/rules/publish", {"source": "rules: []", "reason": "r\x00"}),
    ("/admin/users/role", {"username": "u\x00", "role": "pm"}),
    ("/admin/users/disable", {"username": "u\x00"}),
    ("/admin/users/enable", {"username": "u", "reason": "\x00"}),
])
def test_a_nul_in_a_form_is_a_400(app, path, form):
    """PostgreSQL text cannot hold a NUL: it used to be a 500 there (and stored as typed on SQLite)."""
    admin = Console(app, "admin")
    token = _token(admin.text("/admin/"))
    answer = admin.client.post(path, data={"csrf_token": token, **form})
    assert answer.status_code == 400, answer.status_code


def test_a_nul_in_a_query_is_a_400(app):
    admin = Console(app, "admin")
    assert admin.client.get("/admin/transactions/?reference=a%00b").status_code == 400


def _log_in_with_next(app, target: str):
    name = builders.unique("viewer")
    admin_users.create_user(name, PASSWORD, "viewer", actor="test")
    client = app.test_client()
    token = _token(client.get("/admin/login/").get_data(as_text=True))
    return client.post(f"/admin/login/?next={target}", data={"username": name, "password": PASSWORD,
                                                             "csrf_token": token})


@pytest.mark.parametrize("target", ["/admin%0d%0aSet-Cookie:%20x=1", "/admin/%0a", "/admin/../..//evil.example",
                                    "/admin/..%2f..%2f%2fevil.example", "/admin/%09/evil.example",
                                    "/admin/%C3%A9"])
def test_a_log_in_next_with_control_characters_or_dot_segments_goes_home(app, target):
    answer = _log_in_with_next(app, target)
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/"


def test_a_log_in_next_inside_the_console_is_kept(app):
    answer = _log_in_with_next(app, "/admin/transactions/%3Freference%3Dx%252F%252Fy")
    assert answer.headers["Location"] == "/admin/transactions/?reference=x%2F%2Fy"


def test_the_console_cannot_be_framed_by_another_site(app, client):
    for answer in (client.get("/admin/login/"), Console(app, "ops").client.get("/admin/switches/")):
        assert answer.headers.get("X-Frame-Options") == "DENY"
        assert "frame-ancestors 'none'" in answer.headers.get("Content-Security-Policy", "")
        assert answer.headers.get("X-Content-Type-Options") == "nosniff"
        assert answer.headers.get("Cache-Control") == "no-store"
    assert "X-Frame-Options" not in client.get("/healthz").headers  # the API is not a page


def test_a_decline_code_from_a_channel_cannot_break_out_of_the_dashboard_json(app):
    from datetime import timedelta

    from app.adapters.models import utcnow
    from tests.integration.test_admin_data import add_operation

    shop, _ = builders.merchant()
    add_operation(shop, at=utcnow() - timedelta(minutes=5), status="failed",
                  failure_code="</script><script>alert(1)</script>")
    page = Console(app, "viewer").text("/admin/")
    assert "<script>alert" not in page and "&lt;/script&gt;&lt;script&gt;alert(1)" in page  # the table, escaped
    data = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>', page, re.S).group(1)
    assert "\\u003c/script\\u003e" in data


def test_the_log_in_throttle_holds_for_case_and_space_variants_and_ignores_forwarded_for(app):
    name = builders.unique("ops")
    admin_users.create_user(name, PASSWORD, "ops", actor="test")
    client = app.test_client()

    def attempt(username: str, password: str, address: str = "192.0.2.50", forwarded: str | None = None):
        token = _token(client.get("/admin/login/").get_data(as_text=True))
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        return client.post("/admin/login/", data={"username": username, "password": password, "csrf_token": token},
                           environ_base={"REMOTE_ADDR": address}, headers=headers).status_code

    variants = [name.upper(), f" {name} ", name.capitalize(), f"{name}\t", name]
    for i in range(admin_users.USER_LIMIT):
        assert attempt(variants[i], "wrong password", f"192.0.2.{60 + i}", f"10.0.0.{i}") == 401
    assert attempt(name, PASSWORD, "192.0.2.99") == 429  # the name is locked, whatever its spelling was
    for i in range(admin_users.ADDR_LIMIT):  # X-Forwarded-For is not the client: one address, locked
        attempt(builders.unique("guess"), "wrong password", "192.0.2.77", f"10.1.{i}.1")
    other = builders.unique("viewer")
    admin_users.create_user(other, PASSWORD, "viewer", actor="test")
    assert attempt(other, PASSWORD, "192.0.2.77", "10.9.9.9") == 429


def test_a_new_password_ends_every_older_session_even_a_copied_cookie(app):
    viewer = Console(app, "viewer")
    thief = app.test_client()
    cookie = viewer.client.get_cookie("payrouter_session", path="/admin")
    thief.set_cookie(cookie.key, cookie.value, path="/admin")
    assert thief.get("/admin/audit/").status_code == 200  # a copied cookie works...
    admin_users.set_password(viewer.name, "a brand new password", actor="test")
    assert thief.get("/admin/audit/").status_code == 302  # ...until the password changes
    assert viewer.client.get("/admin/audit/").status_code == 302
    again = app.test_client()
    token = _token(again.get("/admin/login/").get_data(as_text=True))
    assert again.post("/admin/login/", data={"username": viewer.name, "password": "a brand new password",
                                             "csrf_token": token}).status_code == 302
    assert again.get("/admin/audit/").status_code == 200


def test_a_user_name_with_a_final_newline_is_refused(clean):
    """``$`` matches before a final newline: "bob\\n" was created, and could never log in (names are stripped)."""
    from app.domain.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        admin_users.create_user("bob\n", PASSWORD, "viewer", actor="test")
