"""Images pages with the three standing users: what each may see and do, both ways.
Long operations only start a task here (its record and first progress entry); the
worker side is in test_tasks.py."""

from __future__ import annotations

import pytest

from dashboard.accounts.models import AuditEntry
from dashboard.live.models import TaskRecord

pytestmark = pytest.mark.timeout(120)


def busybox_id(env) -> str:
    return env.engine().images.get("busybox:latest").id.removeprefix("sha256:")


def names(env) -> set[str]:
    return {t for img in env.engine().list_images() for t in img["RepoTags"]}


def test_list_needs_login(client, db, dash_engine):
    r = client.get("/images/")
    assert r.status_code == 302 and r.url.startswith("/login/")


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_list_shows_images_and_only_operators_get_forms(client_as, dash_engine, role):
    body = client_as(role).get("/images/").content.decode()
    assert "busybox:latest" in body and busybox_id(dash_engine)[:12] in body
    assert ('action="/images/pull/"' in body) == (role != "viewer")


def test_detail_shows_history_and_inspect(client_as, dash_engine):
    r = client_as("viewer").get(f"/images/{busybox_id(dash_engine)}/")
    assert r.status_code == 200
    body = r.content.decode()
    assert 'id="history"' in body and "busybox:latest" in body and "&quot;RootFS&quot;" in body
    assert client_as("viewer").get("/images/" + "0" * 64 + "/").status_code == 404
    assert client_as("viewer").get("/images/not-an-id/").status_code == 404


def test_tag_is_for_operators(client_as, dash_engine):
    url = f"/images/{busybox_id(dash_engine)}/tag/"
    assert client_as("viewer").post(url, {"target": "mine:1"}).status_code == 403
    assert "mine:1" not in names(dash_engine)
    r = client_as("operator").post(url, {"target": "mine:1"})
    assert r.status_code == 302
    assert "mine:1" in names(dash_engine)
    entry = AuditEntry.objects.get(action="image.tag")
    assert entry.actor == "operator" and entry.target == "mine:1" and entry.result == "ok"


def test_tag_with_a_bad_name_says_why(client_as, dash_engine):
    url = f"/images/{busybox_id(dash_engine)}/tag/"
    c = client_as("operator")
    r = c.post(url, {"target": "Bad Name"}, follow=True)
    assert "tag failed" in r.content.decode() and "spaces" in r.content.decode()
    assert AuditEntry.objects.get(action="image.tag").result != "ok"


def test_remove_is_for_operators(client_as, dash_engine):
    dash_engine.engine().tag_image("busybox:latest", "gone:1")
    assert client_as("viewer").post("/images/remove/", {"ref": "gone:1"}).status_code == 403
    assert "gone:1" in names(dash_engine)
    r = client_as("operator").post("/images/remove/", {"ref": "gone:1"}, follow=True)
    assert "Untagged: gone:1" in r.content.decode()
    assert "gone:1" not in names(dash_engine) and "busybox:latest" in names(dash_engine)
    assert AuditEntry.objects.filter(action="image.remove", target="gone:1").exists()


def test_remove_refused_by_the_engine_is_shown(client_as, dash_engine):
    r = client_as("operator").post("/images/remove/", {"ref": "nosuch:1"}, follow=True)
    assert "remove failed" in r.content.decode()


@pytest.mark.parametrize(
    "url,data",
    [
        ("/images/pull/", {"ref": "127.0.0.1:1/x:1"}),
        ("/images/push/", {"ref": "127.0.0.1:1/x:1"}),
        ("/images/build/", {"dockerfile_text": "FROM busybox\n"}),
        ("/images/export/", {"refs": "busybox:latest"}),
        ("/images/prune/", {"confirm": "yes"}),
    ],
)
def test_long_operations_are_refused_to_viewers(client_as, dash_engine, url, data):
    assert client_as("viewer").post(url, data).status_code == 403
    assert not TaskRecord.objects.exists()


def test_pull_starts_a_task_and_goes_to_its_page(client_as, dash_engine, live_redis):
    r = client_as("operator").post("/images/pull/", {"ref": "127.0.0.1:1/x:1"})
    task = TaskRecord.objects.get()
    assert r.status_code == 302 and r.url == f"/tasks/{task.id}/"
    assert (task.kind, task.target, task.username) == ("image.pull", "127.0.0.1:1/x:1", "operator")
    assert task.task_name == "long.image_pull" and task.state == "pending"
    assert AuditEntry.objects.get(action="image.pull").params["task"] == task.id
    # htmx forms get the page change as a header.
    r = client_as("operator").post("/images/pull/", {"ref": "busybox"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 204 and r["HX-Redirect"].startswith("/tasks/")


def test_task_page_is_readable_by_viewers(client_as, dash_engine, live_redis):
    client_as("operator").post("/images/pull/", {"ref": "127.0.0.1:1/x:1"})
    task = TaskRecord.objects.get()
    for role in ("viewer", "operator"):
        body = client_as(role).get(f"/tasks/{task.id}/").content.decode()
        assert "image.pull" in body and '"state": "pending"' in body
        assert task.id[:10] in client_as(role).get("/tasks/").content.decode()
    assert client_as("viewer").get("/tasks/nosuchtask/").status_code == 404
    assert client_as("viewer").get("/tasks/?state=bogus").status_code == 400


@pytest.mark.parametrize(
    "data,error",
    [
        ({"ref": ""}, "required"),
        ({"ref": "a b"}, "spaces"),
        ({"ref": "Upper"}, "must be lowercase"),
        ({"ref": "x:tag!"}, "invalid tag"),
    ],
)
def test_pull_with_a_bad_reference_says_why(client_as, dash_engine, data, error):
    r = client_as("operator").post("/images/pull/", data)
    assert r.status_code == 400 and error in r.content.decode().lower()
    assert not TaskRecord.objects.exists()


@pytest.mark.parametrize(
    "data,error",
    [
        ({}, "either a Dockerfile or a context"),
        ({"dockerfile_text": "FROM busybox", "tags": "Bad Tag"}, "invalid"),
        ({"dockerfile_text": "FROM busybox", "build_args": "NOEQUALS"}, "KEY=VALUE"),
    ],
)
def test_build_form_errors(client_as, dash_engine, data, error):
    c = client_as("operator")
    assert c.get("/images/build/").status_code == 200
    r = c.post("/images/build/", data)
    assert r.status_code == 400 and error in r.content.decode()
    assert not TaskRecord.objects.exists()


def test_prune_confirmation_lists_what_goes(client_as, dash_engine):
    eng = dash_engine.engine()
    eng.tag_image("busybox:latest", "keep:1")
    assert client_as("viewer").get("/images/prune/").status_code == 403
    c = client_as("operator")
    assert 'id="prune-nothing"' in c.get("/images/prune/").content.decode()
    body = c.get("/images/prune/?all=1").content.decode()
    assert "busybox:latest" in body and "keep:1" in body and "Remove 1 image" in body
    r = c.post("/images/prune/", {"all": "1"})
    assert r.status_code == 400 and "not confirmed" in r.content.decode()


def test_export_download_needs_a_finished_export(client_as, dash_engine):
    assert client_as("viewer").get("/images/exports/" + "a" * 32 + "/").status_code == 403
    assert client_as("operator").get("/images/exports/" + "a" * 32 + "/").status_code == 404
    assert client_as("operator").get("/images/exports/..%2f..%2fetc/").status_code == 404
