"""Images pages' fixtures: the live app's Redis and worker fixtures, and an engine with
busybox that the dashboard (this process and its workers) uses."""

from __future__ import annotations

import pytest

from tests.dashboard.live.conftest import live_redis, redis_server, start_worker  # noqa: F401


@pytest.fixture
def dash_engine(busybox_env, monkeypatch):
    """busybox_env's engine as the dashboard's (engine_for() reads these variables; the
    workers started afterwards inherit them)."""
    for key, value in busybox_env.env.items():
        if key.startswith("BERTH_"):
            monkeypatch.setenv(key, value)
    return busybox_env
