"""The dashboard skeleton: login is required, and the overview shows the engine's info
(through the service layer, from a real engine root)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User


@pytest.fixture
def engine_root(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTH_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("BERTH_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("BERTH_PREFIX", "btdash")
    return tmp_path


@pytest.mark.django_db
def test_overview_requires_login(client):
    r = client.get("/")
    assert r.status_code == 302 and r.url.startswith("/login/")


@pytest.mark.django_db
def test_overview_shows_engine_info(client, engine_root):
    User.objects.create_user("viewer", password="pw-for-tests-1")
    assert client.login(username="viewer", password="pw-for-tests-1")
    r = client.get("/")
    assert r.status_code == 200
    body = r.content.decode()
    assert "CgroupDriver" in body and "cgroupfs" in body
    assert str(engine_root / "root") in body
