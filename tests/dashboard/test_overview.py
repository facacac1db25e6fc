"""The overview page: login and a role required; host facts, counts and disk use from a
real engine root, through the service layer."""

from __future__ import annotations

import platform

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_overview_requires_login(client):
    r = client.get("/")
    assert r.status_code == 302 and r.url.startswith("/login/")


@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
def test_overview_shows_host_and_engine(client_as, engine_root, role):
    r = client_as(role).get("/")
    assert r.status_code == 200
    body = r.content.decode()
    assert platform.release() in body  # kernel
    assert "Cgroup version" in body and "cgroupfs" in body
    assert str(engine_root / "root") in body
    assert 'id="counts">0 (0 running' in body
    assert "CPUs; load" in body and "used of" in body  # host CPU and memory
    for kind in ("Images", "Containers", "Volumes"):
        assert f"<td>{kind}</td>" in body  # disk use by kind
    assert ('href="/users/"' in body) == (role == "admin")


def test_overview_counts_and_disk_use(client_as, busybox_env, monkeypatch):
    for k, v in busybox_env.config().env().items():
        monkeypatch.setenv(k, v)
    busybox_env.berth("create", "--name", "c1", "busybox", check=True)
    body = client_as("viewer").get("/").content.decode()
    assert 'id="counts">1 (0 running, 0 paused, 1 stopped)' in body
    assert "<td>Images</td><td>1</td><td>1</td>" in body  # one image, used by c1


def test_overview_fragment_for_htmx(client_as, engine_root):
    body = client_as("viewer").get("/", HTTP_HX_REQUEST="true").content.decode()
    assert "Host overview" in body and "<nav>" not in body


@pytest.mark.django_db
def test_htmx_request_without_a_session_is_sent_to_the_login_page(client):
    """htmx would swap the login page into a fragment; it gets HX-Redirect instead."""
    r = client.get("/containers/", HTTP_HX_REQUEST="true")
    assert r.status_code == 204 and r["HX-Redirect"].startswith("/login/?next=")
    plain = client.get("/containers/")
    assert plain.status_code == 302 and plain.url.startswith("/login/")
