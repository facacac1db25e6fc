"""System page: disk use for everyone, prune (admins only) with a confirmation listing
what will go, against a real engine with a real container, image and volumes."""

from __future__ import annotations

import re

import pytest

from dashboard.accounts.models import AuditEntry
from dashboard.live.models import TaskRecord
from tests.dashboard.live.conftest import wait_for

pytestmark = pytest.mark.django_db


def final(task_id: str) -> TaskRecord | None:
    rec = TaskRecord.objects.get(pk=task_id)
    return rec if rec.final else None


def confirm_key(page: str) -> str:
    """The fingerprint of the list the confirmation page showed."""
    return re.search(r'name="confirm" value="([^"]+)"', page).group(1)


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


@pytest.mark.timeout(240)
def test_prune_confirmation_lists_what_goes_then_a_task_prunes(
    client_as, dash_busybox, start_worker
):
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
    start_worker()
    r = c.post("/system/prune/", {"all": "1", "volumes": "1", "confirm": confirm_key(body)})
    assert r.status_code == 302 and r.url.startswith("/tasks/")
    task_id = r.url.rstrip("/").rsplit("/", 1)[1]
    rec = wait_for(lambda: final(task_id), 120, "the prune task to end")
    assert rec.state == "success", rec.error
    assert eng.containers(all=True) == [] and eng.list_images() == []
    assert {v["Name"] for v in eng.list_volumes()} == {"named-stays"}
    e = AuditEntry.objects.get(action="system.prune")
    assert e.actor == "admin" and e.address == "127.0.0.1" and e.result == "ok"
    assert e.params["all"] is True and e.params["removed"]["volumes"] == [anon]
    # The task's page says what went.
    body = c.get(r.url).content.decode()
    assert "deleted volume " + anon in body


def test_nothing_to_prune(client_as, engine_root):
    body = client_as("admin").get("/system/prune/").content.decode()
    assert "Nothing to prune" in body


def test_prune_on_the_record_from_its_start_even_if_its_worker_dies(
    client_as, engine_root, live_redis
):
    from dashboard.live import tasks_api
    from dashboard.services import engine_for

    engine_for(None).create_volume(anonymous=True)
    c = client_as("admin")
    key = confirm_key(c.get("/system/prune/", {"volumes": "1"}).content.decode())
    r = c.post("/system/prune/", {"volumes": "1", "confirm": key}, REMOTE_ADDR="192.0.2.8")
    task_id = r.url.rstrip("/").rsplit("/", 1)[1]
    e = AuditEntry.objects.get(action="system.prune")
    assert e.actor == "admin" and e.address == "192.0.2.8" and e.result == "started"
    assert e.params == {"all": False, "volumes": True, "task": task_id}
    tasks_api.fail(task_id, "worker lost: SIGKILL")
    assert AuditEntry.objects.get(pk=e.pk).result == "worker lost: SIGKILL"


def test_untagged_image_shown_as_none(client_as, engine_root):
    """An untagged image reads "<none>" (escaped), as `berth system df` prints it."""
    import io
    import tarfile

    from dashboard.services import engine_for

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"hello\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    engine_for(None).import_image(buf)  # no reference: untagged
    body = client_as("viewer").get("/system/").content.decode()
    assert "<td>&lt;none&gt;</td>" in body


def test_prune_refused_when_the_list_changed_since_the_confirmation(client_as, dash_busybox):
    """The confirmation lists what will go; what the prune removes is exactly that.
    A container stopped since the list was shown would go unlisted: the prune is
    refused, and the new list shown to be confirmed again."""
    dash_busybox.berth("create", "--name", "stopped1", "busybox", check=True)
    c = client_as("admin")
    body = c.get("/system/prune/").content.decode()
    key = confirm_key(body)
    dash_busybox.berth("create", "--name", "late1", "busybox", check=True)
    r = c.post("/system/prune/", {"confirm": key}, HTTP_HX_REQUEST="true")
    body = r.content.decode()
    assert r.status_code == 200 and "changed since" in body
    assert "stopped1" in body and "late1" in body  # the new list, to confirm again
    names = sorted(x.name for x in dash_busybox.engine().containers(all=True))
    assert names == ["late1", "stopped1"]
    e = AuditEntry.objects.get(action="system.prune")
    assert e.actor == "admin" and e.result.startswith("refused: ")
    assert not TaskRecord.objects.exists()


def test_prune_task_checks_the_list_again(users, dash_busybox):
    """Between the page's check and the task's run, the list may change too: the task's
    prune refuses, naming why, and removes nothing."""
    from dashboard.services import system

    dash_busybox.berth("create", "--name", "stopped1", "busybox", check=True)
    key = system.preview_key(system.prune_preview(users["admin"]))
    dash_busybox.berth("create", "--name", "late1", "busybox", check=True)
    with pytest.raises(system.InvalidState, match="changed since the confirmation"):
        system.prune(users["admin"], expect=key)
    assert len(dash_busybox.engine().containers(all=True)) == 2
    key = system.preview_key(system.prune_preview(users["admin"]))
    assert system.prune(users["admin"], expect=key)["containers"]
    assert dash_busybox.engine().containers(all=True) == []
