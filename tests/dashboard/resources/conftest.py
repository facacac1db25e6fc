"""Fixtures for the resources pages' tests.

Shared ones come from their owners' conftests: a private Redis and a real Celery worker
(the prune tasks) from tests/dashboard/live.
"""

import pytest

from tests.dashboard.live.conftest import live_redis, redis_server, start_worker  # noqa: F401


@pytest.fixture(autouse=True)
def _fast_hasher(settings):
    # Django's default hasher costs ~0.3 s per user made; what is tested here does not
    # depend on it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def dash_net(net_env, monkeypatch):
    """The dashboard's engine is net_env's: bridges and rules go into the test's own
    "host" network namespace, never onto the real host."""
    for k, v in net_env.config().env().items():
        monkeypatch.setenv(k, v)
    return net_env
