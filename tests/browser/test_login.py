"""Logging in to the real stack through the form, for each standing user."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
def test_each_user_logs_in_and_sees_the_nav(live_stack, page_as, role):
    page = page_as(role)
    assert page.locator("header .who").inner_text() == role
    assert page.locator("nav a[href='/containers/']").count() == 1
