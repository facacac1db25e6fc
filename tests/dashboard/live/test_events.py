"""The events feed: the page's snapshot, the websocket resuming from it (no gap, no
duplicate) and the relay forwarding what any client does, the CLI included."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from dashboard.services import engine_for
from tests.dashboard.live.conftest import REPO, engine_env_vars, wait_for, worker_env

pytestmark = pytest.mark.timeout(120)


def emit(n: int, type_: str = "container", action: str = "start", who: str = "alice") -> None:
    from django.contrib.auth.models import User

    eng = engine_for(User(username=who))
    for i in range(n):
        eng.emit(type_, action, f"id{i}", name=f"obj{i}")


# -- the page ----------------------------------------------------------------------------------


def test_events_page_needs_login(client, db, engine_root):
    r = client.get("/events/")
    assert r.status_code == 302 and r.url.startswith("/login/")


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_events_page_shows_the_log_and_where_it_ends(client_as, engine_root, role):
    emit(3, "container", "start")
    emit(2, "image", "tag")
    r = client_as(role).get("/events/")
    assert r.status_code == 200
    body = r.content.decode()
    assert body.count('<tr data-seq="') == 5
    assert 'data-after="5"' in body and "user:alice" in body


def test_events_page_filters_by_type_and_action(client_as, engine_root):
    emit(3, "container", "start")
    emit(2, "image", "tag")
    emit(1, "container", "die")
    c = client_as("viewer")
    body = c.get("/events/?type=image").content.decode()
    assert body.count('<tr data-seq="') == 2 and ">tag<" in body and ">start<" not in body
    body = c.get("/events/?type=container&action=die").content.decode()
    assert body.count('<tr data-seq="') == 1
    # The resume point is the log's end, even when the last events did not match.
    assert 'data-after="6"' in c.get("/events/?type=image").content.decode()


def test_events_page_fragment_for_htmx(client_as, engine_root):
    emit(2)
    r = client_as("viewer").get("/events/", HTTP_HX_REQUEST="true")
    body = r.content.decode()
    assert r.status_code == 200 and "<html" not in body and body.count("<tr") == 2


# -- the websocket -----------------------------------------------------------------------------


def _app():
    from dashboard.routing import websocket_urlpatterns

    return URLRouter(websocket_urlpatterns)


async def _connect(user, path: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(_app(), path)
    comm.scope["user"] = user
    ok, code = await comm.connect(timeout=10)
    assert ok, code
    return comm


async def _receive_seqs(comm: WebsocketCommunicator, until: int) -> list[int]:
    seqs: list[int] = []
    while not seqs or seqs[-1] < until:
        seqs.append(json.loads(await comm.receive_from(timeout=30))["seq"])
    return seqs


@pytest.mark.asyncio
async def test_events_socket_refuses_anonymous(engine_root, live_redis, transactional_db):
    from django.contrib.auth.models import AnonymousUser

    comm = WebsocketCommunicator(_app(), "/ws/events/")
    comm.scope["user"] = AnonymousUser()
    ok, code = await comm.connect(timeout=10)
    assert not ok and code == 4403


@pytest.mark.asyncio
async def test_events_socket_resumes_after_the_snapshot(
    engine_root, live_redis, transactional_db, users
):
    """Events appended after the page's snapshot come from the log; the same events
    arriving again from the relay's group are not sent twice."""
    from channels.layers import get_channel_layer

    from dashboard.services import events

    await sync_to_async(emit)(3)
    rows, top = await sync_to_async(events.recent)(100)
    assert [e["seq"] for e in rows] == [1, 2, 3] and top == 3
    await sync_to_async(emit)(4)  # while "the page" was loading

    comm = await _connect(users["viewer"], f"/ws/events/?after={top}")
    assert await _receive_seqs(comm, 7) == [4, 5, 6, 7]
    layer = get_channel_layer()
    for ev in await sync_to_async(events.after)(0):  # a relay replaying everything
        await layer.group_send("events", {"type": "engine.event", "event": ev})
    await sync_to_async(emit)(1)
    nxt = (await sync_to_async(events.after)(7))[0]
    await layer.group_send("events", {"type": "engine.event", "event": nxt})
    assert await _receive_seqs(comm, 8) == [8]
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()


@pytest.mark.asyncio
async def test_events_socket_fills_a_gap_from_the_log(
    engine_root, live_redis, transactional_db, users
):
    """A group message that skips ahead (the channel layer dropped some) makes the
    consumer read the log: nothing is lost."""
    from channels.layers import get_channel_layer

    from dashboard.services import events

    comm = await _connect(users["viewer"], "/ws/events/")  # from now on
    await sync_to_async(emit)(5)
    last = (await sync_to_async(events.after)(0))[-1]
    await get_channel_layer().group_send("events", {"type": "engine.event", "event": last})
    assert await _receive_seqs(comm, 5) == [1, 2, 3, 4, 5]
    await comm.disconnect()


@pytest.mark.asyncio
async def test_events_socket_filters(engine_root, live_redis, transactional_db, users):
    await sync_to_async(emit)(2, "container", "start")
    await sync_to_async(emit)(2, "image", "tag")
    comm = await _connect(users["viewer"], "/ws/events/?after=0&type=image")
    got = [json.loads(await comm.receive_from(timeout=10)) for _ in range(2)]
    assert [(e["seq"], e["type"], e["action"]) for e in got] == [(3, "image", "tag")] + [
        (4, "image", "tag")
    ]
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()


# -- the relay ------------------------------------------------------------------------------


class RelayProc:
    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.live.relay"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def relay(live_redis, transactional_db):
    made: list[RelayProc] = []

    def start() -> RelayProc:
        r = RelayProc(worker_env(live_redis, engine_env_vars()))
        made.append(r)
        wait_for(lambda: any("following events" in x for x in r.lines), 60, "the relay")
        return r

    yield start
    for r in made:
        if r.proc.poll() is None:
            r.stop()


@pytest.mark.asyncio
async def test_relay_forwards_a_cli_action_to_an_open_events_page(
    busybox_env, monkeypatch, relay, users
):
    for k, v in busybox_env.env.items():
        if k.startswith("BERTH_"):
            monkeypatch.setenv(k, v)
    from dashboard.accounts.models import AuditEntry

    proc = await sync_to_async(relay)()
    comm = await _connect(users["viewer"], "/ws/events/?type=image")
    # Not through this consumer's log read: it connected before the action.
    p = await sync_to_async(busybox_env.berth)("tag", "busybox", "relayed:1")
    assert p.returncode == 0, p.stderr
    ev = json.loads(await comm.receive_from(timeout=30))
    assert (ev["type"], ev["action"], ev["attrs"]["name"]) == ("image", "tag", "relayed:1")
    assert ev["actor"].startswith("uid:")
    await comm.disconnect()

    # The relay also imported the CLI action into the audit log.
    entry = await sync_to_async(wait_for)(
        lambda: AuditEntry.objects.filter(event_seq=ev["seq"]).first(), 30, "the audit entry"
    )
    assert entry.action == "image.tag"
    assert await sync_to_async(proc.stop)() == 0


def test_snapshot_reaches_back_past_many_unmatched_events(engine_root, db):
    from dashboard.services import events

    emit(3, "image", "pull")
    emit(1200, "container", "exec_start")
    rows, top = events.recent(200, types=("image",))
    assert [e["seq"] for e in rows] == [1, 2, 3] and top == 1203
    rows, _top = events.recent(5, actions=("exec_start",))
    assert [e["seq"] for e in rows] == [1199, 1200, 1201, 1202, 1203]
