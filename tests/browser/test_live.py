"""The live pages in headless Chromium against the real stack (`python -m dashboard.serve`):
the events page shows a CLI action without a reload, the images list refreshes itself
when an image changes elsewhere, and an export started from the images page is
followed on its task page to the end (download link included)."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.timeout(240)]


def test_live_pages_in_a_browser(live_stack, page_as):
    page = page_as("admin")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    cli = live_stack.engine_env.berth

    # Events: a CLI action appears on the open page.
    page.goto(live_stack.url("/events/"))
    page.wait_for_function(
        "document.getElementById('events-status').textContent === 'live'", timeout=30000
    )
    cli("tag", "busybox", "from-the-cli:1", check=True)
    row = page.locator("#event-rows tr", has_text="from-the-cli:1")
    row.wait_for(timeout=30000)
    assert "uid:" in row.inner_text()

    # Images: the list follows image events from other clients.
    page.goto(live_stack.url("/images/"))
    page.wait_for_timeout(1000)  # its websocket connects
    cli("tag", "busybox", "refreshed:2", check=True)
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
