"""Fixtures for the containers pages: a real engine with busybox that the dashboard's
service layer uses (through the environment, as engine_for() reads it), containers
made through the engine, and Celery running tasks in-process (the real-worker path is
covered by the browser tests against the whole stack)."""

from __future__ import annotations

import secrets

import pytest


@pytest.fixture
def ctr_env(busybox_env, monkeypatch):
    """busybox_env, with the dashboard pointed at it."""
    for k in (
        "BERTH_ROOT",
        "BERTH_RUN",
        "BERTH_PREFIX",
        "BERTH_HOST_NETNS",
        "BERTH_DEFAULT_NETWORK",
    ):
        monkeypatch.setenv(k, busybox_env.env[k])
    return busybox_env


@pytest.fixture
def make_ctr(ctr_env):
    """make_ctr(*cmd, start=True, **opts) -> container record, made by the engine."""
    from engine.containers.options import CreateOptions

    eng = ctr_env.engine()

    def make(*cmd: str, start: bool = True, **kw):
        kw.setdefault("name", "bt" + secrets.token_hex(4))
        c = eng.create_container(CreateOptions(image="busybox", command=list(cmd) or None, **kw))
        if start:
            eng.start_container(c.id)
        return eng.get_container(c.id)

    return make


@pytest.fixture
def eager_celery():
    from dashboard.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


# A private Redis and a real Celery worker (the live app's fixtures), for the stop task.
from tests.dashboard.live.conftest import live_redis, redis_server, start_worker  # noqa: E402,F401
