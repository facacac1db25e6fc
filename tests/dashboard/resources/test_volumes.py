"""Volumes pages against a real engine root: each role both ways, errors next to the
field, inspect shows users, prune removes exactly what the confirmation listed."""

from __future__ import annotations

import pytest

from dashboard.accounts.models import AuditEntry
from dashboard.live.models import TaskRecord
from dashboard.services import engine_for
from tests.dashboard.live.conftest import wait_for

pytestmark = pytest.mark.django_db


def final(task_id: str) -> TaskRecord | None:
    rec = TaskRecord.objects.get(pk=task_id)
    return rec if rec.final else None


def names(eng) -> set[str]:
    return {v["Name"] for v in eng.list_volumes()}


@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
def test_everyone_reads(client_as, engine_root, role):
    engine_for(None).create_volume("seen")
    r = client_as(role).get("/volumes/")
    assert r.status_code == 200 and "seen" in r.content.decode()
    can_change = role != "viewer"
    assert ("Create volume" in r.content.decode()) == can_change
    assert client_as(role).get("/volumes/seen/").status_code == 200


def test_htmx_gets_a_fragment(client_as, engine_root):
    full = client_as("viewer").get("/volumes/").content.decode()
    frag = client_as("viewer").get("/volumes/", HTTP_HX_REQUEST="true").content.decode()
    assert "<nav>" in full and "<nav>" not in frag and 'id="volumes"' in frag


def test_viewer_cannot_change(client_as, engine_root):
    eng = engine_for(None)
    eng.create_volume("keep")
    v = client_as("viewer")
    assert v.post("/volumes/create/", {"name": "nope"}).status_code == 403
    assert v.post("/volumes/keep/remove/").status_code == 403
    assert v.get("/volumes/prune/").status_code == 403
    assert v.post("/volumes/prune/", {"name": "keep"}).status_code == 403
    assert names(eng) == {"keep"}
    assert not AuditEntry.objects.filter(action__startswith="volume.").exists()


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_create_and_remove(client_as, engine_root, role):
    c = client_as(role)
    r = c.post("/volumes/create/", {"name": "data1", "labels": "tier=db"})
    assert r.status_code == 302
    eng = engine_for(None)
    assert eng.inspect_volume("data1")["Labels"] == {"tier": "db"}
    r = c.post("/volumes/data1/remove/")
    assert r.status_code == 302 and "data1" not in names(eng)
    acts = list(AuditEntry.objects.order_by("id").values_list("action", "actor", "result"))
    assert acts == [("volume.create", role, "ok"), ("volume.remove", role, "ok")]


def test_create_errors_next_to_the_field(client_as, engine_root):
    c = client_as("operator")
    r = c.post("/volumes/create/", {"name": "bad name!"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 200  # htmx swaps only 2xx: the errors must show
    assert 'id="name-error"' in r.content.decode()
    engine_for(None).create_volume("dup")
    r = c.post("/volumes/create/", {"name": "dup"})
    assert r.status_code == 400
    assert "a volume named dup exists already" in r.content.decode()
    r = c.post("/volumes/create/", {"name": "ok1", "labels": "=x"})
    assert r.status_code == 400 and "has no key" in r.content.decode()
    e = AuditEntry.objects.get(target="dup")
    assert e.result.startswith("error: a volume named dup exists already")


def test_missing_volume_is_404(client_as, engine_root):
    assert client_as("viewer").get("/volumes/nosuch/").status_code == 404
    r = client_as("operator").post("/volumes/nosuch/remove/")
    assert r.status_code == 409 and "no such volume: nosuch" in r.content.decode()


def test_inspect_shows_users_and_in_use_refused(client_as, busybox_env, monkeypatch):
    for k, v in busybox_env.config().env().items():
        monkeypatch.setenv(k, v)
    busybox_env.engine().create_volume("shared")
    busybox_env.berth("create", "--name", "user1", "-v", "shared:/data", "busybox", check=True)
    body = client_as("viewer").get("/volumes/shared/").content.decode()
    assert 'id="users"><a href="/containers/user1/">user1</a>' in body
    r = client_as("operator").post("/volumes/shared/remove/")
    assert r.status_code == 409 and "in use" in r.content.decode()
    assert "shared" in names(busybox_env.engine())


@pytest.mark.timeout(240)
def test_prune_lists_then_removes_exactly_that(client_as, busybox_env, monkeypatch, start_worker):
    for k, v in busybox_env.config().env().items():
        monkeypatch.setenv(k, v)
    eng = busybox_env.engine()
    eng.create_volume("named1")
    anon = eng.create_volume(anonymous=True)["Name"]
    eng.create_volume("used1")
    busybox_env.berth("create", "--name", "u", "-v", "used1:/d", "busybox", check=True)
    c = client_as("operator")
    body = c.get("/volumes/prune/").content.decode()
    assert anon in body and "named1" not in body and "used1" not in body
    body = c.get("/volumes/prune/", {"all": "1"}).content.decode()
    assert anon in body and "named1" in body and "used1" not in body
    # A volume made after the confirmation was shown is not removed with it.
    late = eng.create_volume(anonymous=True)["Name"]
    start_worker()
    r = c.post("/volumes/prune/", {"name": [anon, "named1"], "all": "1"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 204 and r["HX-Redirect"].startswith("/tasks/")
    task_id = r["HX-Redirect"].rstrip("/").rsplit("/", 1)[1]
    rec = wait_for(lambda: final(task_id), 120, "the prune task to end")
    assert rec.state == "success", rec.error
    assert names(eng) == {"used1", late}
    e = AuditEntry.objects.get(action="volume.prune")
    assert e.actor == "operator" and e.result == "ok"
    assert e.params["confirmed"] == [anon, "named1"] and e.params["removed"] == [anon, "named1"]


def test_prune_on_the_record_from_its_start_even_if_its_worker_dies(
    client_as, engine_root, live_redis
):
    """The audit entry is written when the prune is asked for (who, from where, what was
    confirmed), not only when its task ends: a worker that dies mid-prune (volumes gone,
    the task marked failed by the crash handling) leaves it on the record with the error."""
    from dashboard.live import tasks_api

    engine_for(None).create_volume("doomed1")
    r = client_as("operator").post(
        "/volumes/prune/", {"name": ["doomed1"], "all": "1"}, REMOTE_ADDR="192.0.2.9"
    )
    task_id = r.url.rstrip("/").rsplit("/", 1)[1]
    e = AuditEntry.objects.get(action="volume.prune")
    assert e.actor == "operator" and e.address == "192.0.2.9" and e.result == "started"
    assert e.params["confirmed"] == ["doomed1"] and e.params["task"] == task_id
    tasks_api.fail(task_id, "worker lost: SIGKILL")
    assert AuditEntry.objects.get(pk=e.pk).result == "worker lost: SIGKILL"
