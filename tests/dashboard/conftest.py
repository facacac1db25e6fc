"""Dashboard test fixtures: a real engine root per test and three standing users.

def test_x(client_as, engine_root):
    c = client_as("viewer")      # a logged-in django.test.Client
    assert c.post("/containers/x/stop/").status_code == 403
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PASSWORD = "pw-for-tests-1"


def _file_test_db() -> None:
    """pytest-django makes SQLite test databases in memory, out of reach of the Celery
    workers the integration tests run: a file in a fresh temp dir instead (made once
    per session, removed at exit)."""
    from django.conf import settings

    test = settings.DATABASES["default"].setdefault("TEST", {})
    if not test.get("NAME"):
        tmp = tempfile.mkdtemp(prefix="berth-testdb-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        test["NAME"] = str(Path(tmp) / "test.sqlite3")


_file_test_db()
ROLES = ("admin", "operator", "viewer")


@pytest.fixture
def engine_root(tmp_path, monkeypatch):
    """An engine of the test's own (root under tmp_path, no containers: use eng_env for
    those) whose "host" is a network namespace made here: a page that lists networks
    makes the default bridge, and it must not land on the machine's own network. Its
    prefix is registered with the session's leak check."""
    from tests.conftest import _new_env, _teardown_env, add_host_netns

    e = _new_env(tmp_path)
    e.host_netns = f"{e.prefix}h"
    add_host_netns(e.host_netns)
    for key, value in e.env.items():
        if key.startswith("BERTH_"):
            monkeypatch.setenv(key, value)
    try:
        yield tmp_path
    finally:
        _teardown_env(e)
        subprocess.run(["ip", "netns", "del", e.host_netns], check=False)


@pytest.fixture
def users(db):
    """{"admin": User, "operator": User, "viewer": User}, each granted that role directly."""
    from django.contrib.auth.models import User

    from dashboard.accounts.models import Grant

    out = {}
    for role in ROLES:
        u = User.objects.create_user(role, password=PASSWORD)
        Grant.objects.create(user=u, role=role)
        out[role] = u
    return out


@pytest.fixture
def client_as(users):
    """client_as(role) -> a django.test.Client logged in as that standing user."""
    from django.test import Client

    def make(role: str) -> Client:
        c = Client()
        c.force_login(users[role])
        return c

    return make
