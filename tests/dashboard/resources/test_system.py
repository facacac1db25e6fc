"""System page: disk use for everyone, prune (admins only) with a confirmation listing
what will go, against a real engine with a real container, image and volumes."""

from __future__ import annotations

import pytest

from dashboard.accounts.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def dash_busybox(busybox_env, monkeypatch):
    for k, v in busybox_env.config().env().items():
        monkeypatch.setenv(k, v)
    return busybox_env


@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
def test_disk_use_for_everyone(client_as, dash_busybox, role):
    dash_busybox.engine().create_volume("dfvol")
    r = client_as(role).get("/system/")
    body = r.content.decode()
    assert r.status_code == 200
    assert 'id="df"' in body and "busybox:latest" in body and "dfvol" in body
    # Users and teams links, and prune, for admins only.
    assert ('href="/users/"' in body) == (role == "admin")
    assert ("Show what would go" in body) == (role == "admin")


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_prune_refused_below_admin(client_as, dash_busybox, role):
    dash_busybox.berth("create", "--name", "stopped1", "busybox", check=True)
    c = client_as(role)
    assert c.get("/system/prune/").status_code == 403
    assert c.post("/system/prune/", {"all": "1", "volumes": "1"}).status_code == 403
    assert [x.name for x in dash_busybox.engine().containers(all=True)] == ["stopped1"]
    assert not AuditEntry.objects.filter(action="system.prune").exists()


def test_prune_confirmation_lists_what_goes_then_prunes(client_as, dash_busybox):
    eng = dash_busybox.engine()
    dash_busybox.berth("create", "--name", "stopped1", "busybox", check=True)
    anon = eng.create_volume(anonymous=True)["Name"]
    eng.create_volume("named-stays")
    c = client_as("admin")
    # Default: stopped containers and untagged images only; busybox is tagged.
    body = c.get("/system/prune/").content.decode()
    assert "stopped1" in body and "busybox:latest" not in body and anon not in body
    body = c.get("/system/prune/", {"all": "1", "volumes": "1"}).content.decode()
    assert "stopped1" in body and "busybox:latest" in body and anon in body
    assert "named-stays" not in body
    # Nothing went yet: the page only asked.
    assert eng.containers(all=True) and eng.list_images()
    r = c.post("/system/prune/", {"all": "1", "volumes": "1"})
    assert r.status_code == 302
    assert eng.containers(all=True) == [] and eng.list_images() == []
    assert {v["Name"] for v in eng.list_volumes()} == {"named-stays"}
    e = AuditEntry.objects.get(action="system.prune")
    assert e.actor == "admin" and e.params["all"] is True and e.result == "ok"
    assert e.params["removed"]["volumes"] == [anon]


def test_nothing_to_prune(client_as, engine_root):
    body = client_as("admin").get("/system/prune/").content.decode()
    assert "Nothing to prune" in body
