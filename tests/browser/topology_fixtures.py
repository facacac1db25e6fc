"""The topology browser tests' own stack (once per module): containers run without
--network land on the default bridge, in the stack's host netns (start_stack), so
the diagram has bridges and veths to draw. The session's Chromium is reused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import LiveStack, pages_on, start_stack


@pytest.fixture(scope="module")
def net_stack(tmp_path_factory) -> Iterator[LiveStack]:
    """A stack of its own whose containers go on the default bridge (in its host netns)."""
    with start_stack(tmp_path_factory.mktemp("topostack"), default_network="bridge") as stack:
        yield stack


@pytest.fixture
def net_page_as(net_stack, browser) -> Iterator:
    """net_page_as(role) -> a Playwright Page logged in to net_stack as that user."""
    with pages_on(net_stack, browser) as make:
        yield make
