"""Tasks run by a real Celery worker against a real Redis: progress, results, failures,
a worker lost mid-task, redelivered messages, and a page that leaves and rejoins."""

from __future__ import annotations

import os
import signal

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from dashboard.live import tasks_api
from dashboard.live.models import TaskRecord
from tests.dashboard.live.conftest import wait_for

pytestmark = pytest.mark.timeout(180)


def record(tid: str) -> TaskRecord:
    return TaskRecord.objects.get(pk=tid)


def final(tid: str) -> TaskRecord | None:
    rec = record(tid)
    return rec if rec.final else None


def test_task_reports_progress_and_result(start_worker, users):
    start_worker()
    tid = tasks_api.start(users["operator"], "test.steps", "long.test_steps", {"n": 5}, "five")
    rec = wait_for(lambda: final(tid), 60, "the task to end")
    assert rec.state == "success", rec.error
    assert rec.result == {"steps": 5} and rec.username == "operator" and rec.attempts == 1
    data = [d for _sid, d in tasks_api.entries(tid)]
    assert [d.get("state") for d in data if d.get("event") == "state"] == [
        "pending",
        "running",
        "success",
    ]
    assert [d["current"] for d in data if "current" in d] == [1, 2, 3, 4, 5]


def test_failing_task_is_marked_failed_with_its_message(start_worker, users):
    start_worker()
    tid = tasks_api.start(users["operator"], "test.fails", "long.test_fails", {"message": "no"})
    rec = wait_for(lambda: final(tid), 60, "the task to end")
    assert rec.state == "failure" and rec.error == "no"
    assert rec.summary == "about to fail"
    assert tasks_api.entries(tid)[-1][1] == {"event": "state", "state": "failure", "error": "no"}


def test_redelivered_message_of_a_finished_task_does_not_run_again(start_worker, users):
    from dashboard.celery import app

    worker = start_worker()
    tid = tasks_api.start(users["operator"], "test.steps", "long.test_steps", {"n": 2})
    wait_for(lambda: final(tid), 60, "the task to end")
    count = len(tasks_api.entries(tid))
    app.send_task("long.test_steps", kwargs={"n": 2}, task_id=tid)  # as a redelivery would
    wait_for(lambda: f"{tid}" in worker.output() and "not run" in worker.output(), 60, "skip")
    rec = record(tid)
    assert rec.state == "success" and rec.attempts == 1
    assert len(tasks_api.entries(tid)) == count


def _running_pid(tid: str) -> int | None:
    rec = record(tid)
    if rec.state != "running" or len(tasks_api.entries(tid)) < 4:
        return None
    return int(rec.worker.rsplit(":", 1)[1])


def test_pool_process_killed_mid_task_fails_the_task(start_worker, users):
    worker = start_worker()
    tid = tasks_api.start(
        users["operator"], "test.steps", "long.test_steps", {"n": 10000, "pause": 0.05}
    )
    pid = wait_for(lambda: _running_pid(tid), 60, "the task to run")
    assert pid in worker.pool_pids()
    os.kill(pid, signal.SIGKILL)
    rec = wait_for(lambda: final(tid), 60, "the task to be failed")
    assert rec.state == "failure" and "worker lost" in rec.error
    assert tasks_api.entries(tid)[-1][1]["state"] == "failure"


def test_whole_worker_killed_mid_task_fails_the_task_once_its_heartbeat_stops(start_worker, users):
    worker = start_worker()
    tid = tasks_api.start(
        users["operator"], "test.steps", "long.test_steps", {"n": 10000, "pause": 0.05}
    )
    wait_for(lambda: _running_pid(tid), 60, "the task to run")
    os.killpg(worker.proc.pid, signal.SIGKILL)  # main process and pool: no one reports it
    worker.proc.wait()
    assert tasks_api.reap_stale() == []  # its heartbeat has not expired yet
    wait_for(lambda: tid in tasks_api.reap_stale() or final(tid), 90, "the reaper")
    rec = record(tid)
    assert rec.state == "failure" and "worker lost" in rec.error
    assert tasks_api.begin(tid) is False  # a redelivered message would not run it


def _ws_app():
    from dashboard.routing import websocket_urlpatterns

    return URLRouter(websocket_urlpatterns)


async def _connect(user, path: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(_ws_app(), path)
    comm.scope["user"] = user
    connected, code = await comm.connect(timeout=10)
    assert connected, code
    return comm


@pytest.mark.asyncio
async def test_task_page_left_mid_task_and_rejoined_sees_every_entry_once(start_worker, users):
    """Connect, read some progress, disconnect mid-task, reconnect from the last entry
    ID: the entries seen form the stream exactly (no gap, no duplicate) to the end."""
    import json

    from asgiref.sync import sync_to_async

    await sync_to_async(start_worker)()
    tid = await sync_to_async(tasks_api.start)(
        users["viewer"], "test.steps", "long.test_steps", {"n": 60, "pause": 0.05}
    )
    seen: list[tuple[str, dict]] = []

    comm = await _connect(users["viewer"], f"/ws/tasks/{tid}/")
    while len([d for _s, d in seen if "current" in d]) < 5:
        msg = json.loads(await comm.receive_from(timeout=30))
        seen.append((msg["sid"], msg["data"]))
    await comm.disconnect()
    assert not any(d.get("state") == "success" for _s, d in seen)  # left mid-task

    comm = await _connect(users["viewer"], f"/ws/tasks/{tid}/?after={seen[-1][0]}")
    while True:
        msg = json.loads(await comm.receive_from(timeout=60))
        seen.append((msg["sid"], msg["data"]))
        if msg["data"].get("state") in ("success", "failure"):
            break
    closed = await comm.receive_output(timeout=10)
    assert closed["type"] == "websocket.close"

    stream = await sync_to_async(tasks_api.entries)(tid)
    assert seen == stream
    assert [d["current"] for _s, d in seen if "current" in d] == list(range(1, 61))
    assert seen[-1][1]["state"] == "success"


def test_transient_failures_are_retried_then_succeed(start_worker, users):
    start_worker()
    tid = tasks_api.start(users["operator"], "test.flaky", "long.test_flaky", {"failures": 2})
    rec = wait_for(lambda: final(tid), 60, "the task to end")
    assert rec.state == "success" and rec.attempts == 3 and rec.result == {"attempt": 3}
    states = [d["state"] for _s, d in tasks_api.entries(tid) if d.get("event") == "state"]
    assert states == ["pending", "running", "pending", "running", "pending", "running", "success"]
    retries = [d for _s, d in tasks_api.entries(tid) if d.get("retry")]
    assert "transient failure 1; retry 1/2" in retries[0]["reason"]


def test_retries_run_out_and_the_task_fails(start_worker, users):
    start_worker()
    tid = tasks_api.start(users["operator"], "test.flaky", "long.test_flaky", {"failures": 5})
    rec = wait_for(lambda: final(tid), 60, "the task to end")
    assert rec.state == "failure" and rec.attempts == 3
    assert rec.error == "transient failure 3"
