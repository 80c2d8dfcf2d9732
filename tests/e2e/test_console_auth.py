"""Journeys: log in and out; a viewer cannot publish rules (403); an admin manages users on the
Users page; every change shows in the Audit log with its before and after."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import PASSWORD

NAVIGATION = ["Dashboard", "Rules", "Switches", "Channels", "Transactions", "Reconciliation", "Webhooks",
              "Audit log"]


def test_log_in_and_out(live, page, make_user):
    name = make_user("ops")
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(live.admin_url + "/rules/")  # not logged in: the log-in page, and back here after
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("Invalid user name or password.")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(live.admin_url + "/rules/")
    nav = page.locator("nav")
    for item in NAVIGATION:
        expect(nav.get_by_role("link", name=item, exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="Users", exact=True)).to_have_count(0)  # admins only
    expect(page.locator("#console-user")).to_have_text(f"{name} (ops)")
    nav.get_by_role("link", name="Dashboard", exact=True).click()
    page.wait_for_load_state("networkidle")
    # Every asset came from the router itself: the console works with no internet.
    assert requested and all(url.startswith(live.url + "/") for url in requested), \
        [url for url in requested if not url.startswith(live.url + "/")]
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.goto(live.admin_url + "/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))


def test_a_viewer_gets_403_on_publish_and_on_the_users_page(live, page, login):
    login(page, "viewer")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    # Publishing (a pm action), posted with a valid session and CSRF token: refused for the role.
    answer = page.request.post(live.admin_url + "/rules/publish", form={"csrf_token": token, "reason": "x"},
                               max_redirects=0)
    assert answer.status == 403, answer.status
    response = page.goto(live.admin_url + "/users/")
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("403 Forbidden")


def test_admin_creates_and_disables_a_user_and_the_audit_log_shows_it(live, page, login, browser):
    me = login(page, "admin")
    page.get_by_role("link", name="Users", exact=True).click()
    new = f"newbie-{me[-8:]}"
    form = page.locator("#create-user")
    form.get_by_label("Username").fill(new)
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_label("Role").select_option("pm")
    form.get_by_role("button", name="Create user").click()
    row = page.locator(f"tr.user-row[data-username='{new}']")
    expect(row.locator(".user-status")).to_have_text("active")

    other = browser.new_context()  # the new user logs in elsewhere
    theirs = other.new_page()
    theirs.goto(live.admin_url + "/login/")
    theirs.get_by_label("Username").fill(new)
    theirs.get_by_label("Password").fill(PASSWORD)
    theirs.get_by_role("button", name="Log in").click()
    expect(theirs.locator("#console-user")).to_have_text(f"{new} (pm)")

    row.get_by_label(f"Role of {new}").select_option("ops")
    row.get_by_role("button", name="Change role").click()
    row = page.locator(f"tr.user-row[data-username='{new}']")
    expect(row.get_by_label(f"Role of {new}")).to_have_value("ops")
    row.get_by_role("button", name="Disable").click()
    expect(page.locator(f"tr.user-row[data-username='{new}'] .user-status")).to_have_text("disabled")

    theirs.reload()  # disabled: their session ends at once
    expect(theirs).to_have_url(re.compile(r"/admin/login/"))
    other.close()

    page.get_by_role("link", name="Audit log", exact=True).click()
    page.locator("#f-object").fill(f"user:{new}")
    page.get_by_role("button", name="Filter").click()
    entries = page.locator("tr.audit-entry")
    expect(entries).to_have_count(3)
    disable, set_role, create = entries.nth(0), entries.nth(1), entries.nth(2)
    expect(disable.locator("td").nth(1)).to_have_text(me)
    expect(disable.locator("td").nth(2)).to_have_text("user.disable")
    expect(disable.locator(".audit-before")).to_contain_text('"disabled": false')
    expect(disable.locator(".audit-after")).to_contain_text('"disabled": true')
    expect(set_role.locator(".audit-before")).to_contain_text('"role": "pm"')
    expect(set_role.locator(".audit-after")).to_contain_text('"role": "ops"')
    expect(create.locator("td").nth(2)).to_have_text("user.create")
    # Filter by user: the same three, and by another user: none.
    page.goto(live.admin_url + f"/audit/?user={me}&object=user:{new}")
    expect(page.locator("tr.audit-entry")).to_have_count(3)
    page.goto(live.admin_url + f"/audit/?user=someone-else&object=user:{new}")
    expect(page.locator("tr.audit-entry")).to_have_count(0)
