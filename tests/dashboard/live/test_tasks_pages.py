"""Tasks pages and the task websocket without a worker: records and progress written
here through the tasks API, read back as the pages show them."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from dashboard.live import tasks_api
from dashboard.live.models import TaskRecord

pytestmark = pytest.mark.timeout(120)


def make_task(user, kind: str = "image.pull", target: str = "busybox") -> str:
    """A record as start() makes it, without sending anything to a broker."""
    rec = TaskRecord.objects.create(
        id=tasks_api.uuid.uuid4().hex, kind=kind, task_name="long.x", target=target, user=user,
        username=user.username,
    )  # fmt: skip
    tasks_api.progress(rec.id, {"event": "state", "state": "pending"})
    return rec.id


def test_tasks_page_needs_login(client, db):
    r = client.get("/tasks/")
    assert r.status_code == 302 and r.url.startswith("/login/")


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_tasks_page_lists_every_users_tasks(client_as, users, live_redis, role):
    mine = make_task(users["operator"], "image.pull", "alpine")
    other = make_task(users["admin"], "image.build", "app:1")
    tasks_api.fail(other, "step 2/3 failed")
    body = client_as(role).get("/tasks/").content.decode()
    assert mine[:10] in body and other[:10] in body and "step 2/3 failed" in body
    assert 'hx-trigger="every 2s"' in body  # the list refreshes itself


def test_tasks_page_filters_and_fragment(client_as, users, live_redis):
    a = make_task(users["operator"], "image.pull")
    b = make_task(users["operator"], "image.push")
    tasks_api.finish(b, {"Digest": "sha256:x"})
    c = client_as("viewer")
    body = c.get("/tasks/?state=success").content.decode()
    assert b[:10] in body and a[:10] not in body
    body = c.get("/tasks/?kind=image.pull", HTTP_HX_REQUEST="true").content.decode()
    assert a[:10] in body and b[:10] not in body and "<html" not in body


def test_task_page_snapshot_and_resume_point(client_as, users, live_redis):
    tid = make_task(users["operator"])
    tasks_api.progress(tid, {"id": "abc", "status": "Downloading", "current": 1, "total": 2})
    last = tasks_api.progress(tid, {"line": "hello"})
    body = client_as("viewer").get(f"/tasks/{tid}/").content.decode()
    assert f'data-after="{last}"' in body and '"line": "hello"' in body
    assert f'data-task="{tid}"' in body


def test_finish_and_fail_happen_once(users, live_redis):
    tid = make_task(users["operator"])
    assert tasks_api.finish(tid, {"ok": 1}) is True
    assert tasks_api.fail(tid, "late") is False  # a final state is never changed
    rec = TaskRecord.objects.get(pk=tid)
    assert rec.state == "success" and rec.error == "" and rec.finished
    states = [d["state"] for _s, d in tasks_api.entries(tid) if d.get("event") == "state"]
    assert states == ["pending", "success"]


def _app():
    from dashboard.routing import websocket_urlpatterns

    return URLRouter(websocket_urlpatterns)


async def _try(user, path: str):
    comm = WebsocketCommunicator(_app(), path)
    comm.scope["user"] = user
    return comm, await comm.connect(timeout=10)


@pytest.mark.asyncio
async def test_task_socket_refusals(users, live_redis, transactional_db):
    from django.contrib.auth.models import AnonymousUser

    tid = await sync_to_async(make_task)(users["operator"])
    _c, (ok, code) = await _try(AnonymousUser(), f"/ws/tasks/{tid}/")
    assert (ok, code) == (False, 4403)
    _c, (ok, code) = await _try(users["viewer"], "/ws/tasks/nosuch/")
    assert (ok, code) == (False, 4404)
    _c, (ok, code) = await _try(users["viewer"], f"/ws/tasks/{tid}/?after=garbage")
    assert (ok, code) == (False, 4400)


@pytest.mark.asyncio
async def test_task_socket_sends_live_entries_and_closes_at_the_end(
    users, live_redis, transactional_db
):
    tid = await sync_to_async(make_task)(users["operator"])
    comm, (ok, _code) = await _try(users["viewer"], f"/ws/tasks/{tid}/")
    assert ok
    first = json.loads(await comm.receive_from(timeout=10))
    assert first["data"] == {"event": "state", "state": "pending"}
    await sync_to_async(tasks_api.progress)(tid, {"line": "one"})
    assert json.loads(await comm.receive_from(timeout=10))["data"] == {"line": "one"}
    await sync_to_async(tasks_api.fail)(tid, "it broke")
    last = json.loads(await comm.receive_from(timeout=10))
    assert last["data"] == {"event": "state", "state": "failure", "error": "it broke"}
    assert (await comm.receive_output(timeout=10))["type"] == "websocket.close"


def test_a_task_that_cannot_be_queued_fails_with_the_reason(users, live_redis, transactional_db):
    from dashboard.celery import app
    from tests.dashboard.live.conftest import _reset_celery_connections

    app.conf.update(broker_url="redis+socket:///nonexistent/berth-test.sock")
    _reset_celery_connections(app)  # live_redis puts the real broker back afterwards
    tid = tasks_api.start(users["operator"], "image.pull", "long.image_pull", {"ref": "x"})
    rec = TaskRecord.objects.get(pk=tid)
    assert rec.state == "failure" and "could not queue the task" in rec.error
