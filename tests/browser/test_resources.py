"""The htmx pages in headless Chromium against the real stack (`dashboard.serve`):
forms answer in place (errors next to the field, no page load), an admin's new user
gets a one-time password that works, a viewer gets no forms and a 403 when forcing."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.browser.conftest import CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (shutil.which("redis-server") and os.path.exists(CHROMIUM)),
        reason="needs redis-server and /usr/bin/chromium",
    ),
    pytest.mark.timeout(300),
]


def test_volume_form_answers_in_place(live_stack, page_as):
    page = page_as("operator")
    page.goto(live_stack.url("/volumes/"))
    page.evaluate("window.__noReload = 1")  # gone if the page were loaded again
    page.fill("input[name=name]", "bad name!")
    page.click("form.create button[type=submit]")
    err = page.locator("#name-error")
    err.wait_for()
    assert "volume name is 2 or more" in err.inner_text()
    page.fill("input[name=name]", "brvol1")
    page.click("form.create button[type=submit]")
    page.locator("#volumes a", has_text="brvol1").wait_for()
    assert page.locator("#name-error").count() == 0
    assert page.evaluate("window.__noReload") == 1
    assert "Volume brvol1 created." in page.locator("main").inner_text()
    assert "brvol1" in {v["Name"] for v in live_stack.engine().list_volumes()}


def test_admin_creates_user_who_logs_in_with_the_one_time_password(live_stack, page_as, browser):
    page = page_as("admin")
    page.goto(live_stack.url("/users/"))
    page.fill("input[name=username]", "brnewbie")
    page.select_option("select[name=role]", "viewer")
    page.click("form button[type=submit]")
    pw = page.locator("#onetime-password")
    pw.wait_for()
    password = pw.inner_text().strip()
    ctx = browser.new_context()
    try:
        p2 = ctx.new_page()
        p2.goto(live_stack.url("/login/?next=/volumes/"))
        p2.fill("input[name=username]", "brnewbie")
        p2.fill("input[name=password]", password)
        p2.click("button[type=submit]")
        p2.wait_for_url(lambda u: u.endswith("/volumes/"))
        assert p2.locator("form.create").count() == 0  # a viewer gets no create form
    finally:
        ctx.close()


def test_viewer_forcing_a_change_gets_403(live_stack, page_as):
    page = page_as("viewer")
    page.goto(live_stack.url("/volumes/"))
    assert page.locator("form.create").count() == 0
    status = page.evaluate(
        """async () => {
            const token = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken'];
            const r = await fetch('/volumes/create/', {method: 'POST',
                headers: {'X-CSRFToken': token, 'Content-Type': 'application/x-www-form-urlencoded'},
                body: 'name=forced1'});
            return r.status;
        }"""
    )
    assert status == 403
    assert "forced1" not in {v["Name"] for v in live_stack.engine().list_volumes()}
