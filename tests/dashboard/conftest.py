"""Dashboard test fixtures: a real engine root per test and three standing users.

def test_x(client_as, engine_root):
    c = client_as("viewer")      # a logged-in django.test.Client
    assert c.post("/containers/x/stop/").status_code == 403
"""

from __future__ import annotations

import atexit
import secrets
import shutil
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
    """Engine root/run dirs of the test's own (no containers: use eng_env for those)."""
    monkeypatch.setenv("BERTH_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("BERTH_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("BERTH_PREFIX", "bd" + secrets.token_hex(3))
    return tmp_path


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
