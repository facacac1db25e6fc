"""The live pages in headless Chromium against the real stack (`python -m dashboard.serve`):
the events page shows a CLI action without a reload, the images list refreshes itself
when an image changes elsewhere, and an export started from the images page is
followed on its task page to the end (download link included)."""

from __future__ import annotations

import os
import re
import shutil
import signal

import pytest

from tests.conftest import _new_env, _teardown_env
from tests.dashboard.test_stack import PASSWORD_RE, Stack, free_port, processes_mentioning

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not (shutil.which("redis-server") and os.path.exists(CHROMIUM)),
        reason="needs redis-server and chromium",
    ),
]


@pytest.fixture
def stack(tmp_path):
    eng = _new_env(tmp_path)
    eng.engine().bootstrap_image("busybox", None)
    env = dict(os.environ)
    env.pop("BERTH_REDIS_URL", None)
    env.pop("BERTH_SECRET_KEY", None)
    env.update({k: v for k, v in eng.env.items() if k.startswith("BERTH_")})
    env.update(
        BERTH_DASHBOARD_DB=str(tmp_path / "dashboard.sqlite3"),
        BERTH_LISTEN=f"127.0.0.1:{free_port()}",
    )
    s = Stack(env)
    try:
        s.password = s.wait_for(PASSWORD_RE.pattern).group(1)
        s.wait_for(r"dashboard at ")
        s.base = "http://" + env["BERTH_LISTEN"]
        s.eng = eng
        yield s
        assert s.stop() == 0, s.output()
    finally:
        s.kill()
        for pid, _ in processes_mentioning(str(tmp_path)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _teardown_env(eng)


def test_live_pages_in_a_browser(stack, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(stack.base + "/login/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", stack.password)
            page.click("form button")
            page.wait_for_url(stack.base + "/")

            # Events: a CLI action appears on the open page.
            page.goto(stack.base + "/events/")
            page.wait_for_function(
                "document.getElementById('events-status').textContent === 'live'", timeout=30000
            )
            stack.eng.berth("tag", "busybox", "from-the-cli:1", check=True)
            row = page.locator("#event-rows tr", has_text="from-the-cli:1")
            row.wait_for(timeout=30000)
            assert "uid:" in row.inner_text()

            # Images: the list follows image events from other clients.
            page.goto(stack.base + "/images/")
            page.wait_for_timeout(1000)  # its websocket connects
            stack.eng.berth("tag", "busybox", "refreshed:2", check=True)
            page.locator("#image-rows", has_text="refreshed:2").wait_for(timeout=30000)

            # An export task, followed on its page until the download link shows.
            page.locator("form[action='/images/export/'] button").first.click()
            page.wait_for_url(re.compile(r".*/tasks/[0-9a-f]{32}/$"), timeout=30000)
            page.wait_for_function(
                "document.getElementById('task-state').textContent === 'success'", timeout=90000
            )
            assert page.locator("#task-download").is_visible()
            assert "archive ready" in page.locator("#task-log").inner_text()
            assert errors == []
        finally:
            browser.close()
