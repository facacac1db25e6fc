"""The containers websockets against real containers: logs follow and flow control,
the terminal (echo, resize, hang-up on close), shared stats sampling, the live list,
and who is refused."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import time

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from dashboard.containers.consumers import WINDOW
from dashboard.services import logs as logsvc
from dashboard.services import stats as statsvc
from dashboard.services import terminal as termsvc

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio]


@pytest.fixture
def ws_users(transactional_db):
    """Standing users visible to the consumers' own DB connections (committed)."""
    from django.contrib.auth.models import AnonymousUser, User

    from dashboard.accounts.models import Grant

    out = {"anonymous": AnonymousUser()}
    for role in ("admin", "operator", "viewer"):
        u = User.objects.create_user(role, password="pw-for-tests-1")
        Grant.objects.create(user=u, role=role)
        out[role] = u
    return out


def communicator(path: str, user) -> WebsocketCommunicator:
    from dashboard.routing import websocket_urlpatterns

    c = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    c.scope["user"] = user
    return c


async def recv_json(c: WebsocketCommunicator, timeout: float = 20) -> dict:
    return json.loads(await c.receive_from(timeout=timeout))


async def lines_until(c: WebsocketCommunicator, want: str, timeout: float = 30) -> list[list[str]]:
    """Lines received (acking each batch) until one has text `want`."""
    got: list[list[str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await recv_json(c, timeout=max(0.1, deadline - time.monotonic()))
        if "lines" in msg:
            got += msg["lines"]
            await c.send_json_to({"ack": msg["end"]})
            if any(ln[2] == want for ln in got):
                return got
    raise AssertionError(f"no line {want!r} in {got[-20:]}")


async def test_logs_follow_sees_a_new_line(ws_users, make_ctr, ctr_env):
    ctr = await sync_to_async(make_ctr)("sh", "-c", "echo first; read x; echo second; sleep 60",
                                        interactive=True)  # fmt: skip
    c = communicator(f"/ws/containers/{ctr.name}/logs/", ws_users["viewer"])
    connected, _ = await c.connect()
    assert connected
    got = await lines_until(c, "first")
    assert got[0][1] == "stdout" and got[0][0][:4].isdigit()  # [time, stream, text]
    # Nothing more until the container writes again; then the new line arrives.
    await asyncio.sleep(0.3)
    await sync_to_async(ctr_env.berth)(
        "exec", ctr.name, "sh", "-c", "echo second-via-exec >/proc/1/fd/1"
    )
    await lines_until(c, "second-via-exec")
    assert logsvc.open_count() == 1
    await c.disconnect()
    assert logsvc.open_count() == 0  # closing the page closed the file and the task


async def test_logs_tail_since_and_stream_filter(ws_users, make_ctr, ctr_env):
    ctr = await sync_to_async(make_ctr)("sh", "-c", "seq 1 100; echo oops >&2")
    await sync_to_async(ctr_env.engine().wait_container)(ctr.id)
    c = communicator(f"/ws/containers/{ctr.id}/logs/?tail=3&follow=0", ws_users["viewer"])
    assert (await c.connect())[0]
    got = await lines_until(c, "oops")
    assert [ln[2] for ln in got] == ["99", "100", "oops"]
    await c.disconnect()
    c = communicator(f"/ws/containers/{ctr.id}/logs/?stream=stderr&follow=0", ws_users["viewer"])
    assert (await c.connect())[0]
    got = await lines_until(c, "oops")
    assert [ln[2] for ln in got] == ["oops"]
    await c.disconnect()
    c = communicator(f"/ws/containers/{ctr.id}/logs/?since=1m&tail=1", ws_users["viewer"])
    assert (await c.connect())[0]
    assert [ln[2] for ln in await lines_until(c, "oops")] == ["oops"]
    await c.disconnect()
    # a since in the future: nothing
    c = communicator(f"/ws/containers/{ctr.id}/logs/?since=2999-01-01&follow=0", ws_users["viewer"])
    assert (await c.connect())[0]
    msg = await recv_json(c)
    assert "lines" not in msg
    await c.disconnect()
    c = communicator(f"/ws/containers/{ctr.id}/logs/?tail=many", ws_users["viewer"])
    assert await c.connect() == (False, 4400)


async def test_logs_flow_control_pauses_until_acknowledged(ws_users, make_ctr, ctr_env):
    ctr = await sync_to_async(make_ctr)("sh", "-c", "seq 1 200000")
    await sync_to_async(ctr_env.engine().wait_container)(ctr.id)
    c = communicator(f"/ws/containers/{ctr.id}/logs/", ws_users["viewer"])
    assert (await c.connect())[0]
    end = 0
    # Read without acknowledging: the server must stop past its window. (A timeout in
    # receive_output would cancel the consumer, hence receive_nothing.)
    while not await c.receive_nothing(timeout=2):
        msg = await recv_json(c)
        if "lines" in msg:
            end = msg["end"]
    assert WINDOW < end <= WINDOW + 2 * logsvc.CHUNK  # paused, far from the ~7 MB log
    await c.send_json_to({"ack": end})  # drawn: it goes on
    msg = await recv_json(c)
    assert msg["end"] > end
    await c.disconnect()
    assert logsvc.open_count() == 0


async def test_logs_refused_without_login_and_unknown_container(ws_users, ctr_env):
    c = communicator("/ws/containers/x/logs/", ws_users["anonymous"])
    assert await c.connect() == (False, 4403)
    c = communicator("/ws/containers/nosuch/logs/", ws_users["viewer"])
    assert await c.connect() == (False, 4404)


async def read_terminal(c: WebsocketCommunicator, want: str, timeout: float = 30) -> str:
    out = b""
    deadline = time.monotonic() + timeout
    while want.encode() not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {want!r} in terminal output {out[-500:]!r}")  # noqa
        msg = await c.receive_output(timeout=left)
        if msg.get("bytes"):
            out += msg["bytes"]
            await c.send_json_to({"ack": len(out)})  # approximate: acks what we have
        elif msg.get("type") == "websocket.close":
            raise AssertionError(f"closed: {msg}; output {out[-500:]!r}")
    return out.decode(errors="replace")


def exec_processes(ctr_env, cid: str) -> list[str]:
    top = ctr_env.engine().top_container(cid)
    col = top["Titles"].index("CMD") if "CMD" in top["Titles"] else -1
    return [p[col] for p in top["Processes"]]


async def test_terminal_echo_resize_and_hangup(ws_users, make_ctr, ctr_env):
    ctr = await sync_to_async(make_ctr)("sleep", "300")
    c = communicator(f"/ws/containers/{ctr.name}/terminal/?rows=30&cols=90", ws_users["operator"])
    connected, _ = await c.connect()
    assert connected
    await read_terminal(c, "# ")  # the prompt
    await c.send_json_to({"in": "echo hel''lo\n"})
    out = await read_terminal(c, "hello")
    assert "hel''lo" in out  # the typed line echoed by the tty, then the output
    await c.send_json_to({"in": "stty size\n"})
    await read_terminal(c, "30 90")
    await c.send_json_to({"resize": [40, 100]})
    await c.send_json_to({"in": "stty size\n"})
    await read_terminal(c, "40 100")
    assert termsvc.open_count() == 1
    helper = next(iter(termsvc._OPEN)).pid
    from dashboard.accounts.models import AuditEntry

    entry = await sync_to_async(AuditEntry.objects.get)(action="container.terminal")
    assert entry.actor == "operator" and entry.target == ctr.name
    procs = await sync_to_async(exec_processes)(ctr_env, ctr.id)
    assert any(p.strip() in ("/bin/sh", "sh") for p in procs), procs
    await c.disconnect()
    # Closing the page: the helper is gone and so is the shell in the container.
    assert termsvc.open_count() == 0
    assert not os.path.exists(f"/proc/{helper}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        procs = await sync_to_async(exec_processes)(ctr_env, ctr.id)
        if not any("sh" == p.strip() or p.strip() == "/bin/sh" for p in procs):
            break
        await asyncio.sleep(0.1)
    assert not any(p.strip() in ("/bin/sh", "sh") for p in procs), procs


async def test_terminal_flow_control_pauses_until_acknowledged(ws_users, make_ctr):
    ctr = await sync_to_async(make_ctr)("sleep", "300")
    c = communicator(f"/ws/containers/{ctr.name}/terminal/", ws_users["operator"])
    assert (await c.connect())[0]
    total = len(await read_terminal(c, "# "))
    await c.send_json_to({"in": "seq 1 400000\n"})  # ~2.7 MB through the pty
    # Without acknowledgements the server stops reading the pty past its window.
    while not await c.receive_nothing(timeout=2):
        msg = await c.receive_output()
        total += len(msg.get("bytes") or b"")
    assert WINDOW < total <= WINDOW + 4 * 65536, total
    await c.send_json_to({"ack": total})  # drawn: output resumes
    msg = await c.receive_output(timeout=20)
    assert msg.get("bytes")
    await c.disconnect()
    assert termsvc.open_count() == 0


async def test_terminal_exit_is_reported(ws_users, make_ctr):
    ctr = await sync_to_async(make_ctr)("sleep", "300")
    c = communicator(f"/ws/containers/{ctr.name}/terminal/", ws_users["admin"])
    assert (await c.connect())[0]
    await read_terminal(c, "# ")
    await c.send_json_to({"in": "exit 3\n"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = await c.receive_output(timeout=30)
        if msg.get("text") and "exit" in msg["text"]:
            assert json.loads(msg["text"]) == {"exit": 3}
            break
    else:
        raise AssertionError("no exit message")
    await c.disconnect()
    assert termsvc.open_count() == 0


async def test_terminal_closes_when_the_role_is_revoked(ws_users, make_ctr, monkeypatch):
    """A shell outlives its page load: an operator demoted to viewer loses it within
    the re-check interval, and the shell in the container goes with it."""
    from dashboard.accounts.models import Grant
    from dashboard.containers import consumers

    monkeypatch.setattr(consumers, "ROLE_RECHECK", 0.5)
    ctr = await sync_to_async(make_ctr)("sleep", "300")
    c = communicator(f"/ws/containers/{ctr.name}/terminal/", ws_users["operator"])
    assert (await c.connect())[0]
    await read_terminal(c, "# ")
    await sync_to_async(Grant.objects.filter(user=ws_users["operator"]).update)(role="viewer")
    deadline = time.monotonic() + 20
    closed = None
    while time.monotonic() < deadline and closed is None:
        msg = await c.receive_output(timeout=20)
        if msg["type"] == "websocket.close":
            closed = msg.get("code")
        elif msg.get("text"):
            assert json.loads(msg["text"]) == {"error": "access revoked"}
    assert closed == 4403
    assert termsvc.open_count() == 0


async def test_terminal_refused_for_viewer_and_anonymous(ws_users, make_ctr):
    ctr = await sync_to_async(make_ctr)("sleep", "300")
    for who in ("viewer", "anonymous"):
        c = communicator(f"/ws/containers/{ctr.name}/terminal/", ws_users[who])
        assert await c.connect() == (False, 4403)
    assert termsvc.open_count() == 0


async def test_terminal_on_a_stopped_container_says_why(ws_users, make_ctr):
    ctr = await sync_to_async(make_ctr)("true", start=False)
    c = communicator(f"/ws/containers/{ctr.name}/terminal/", ws_users["operator"])
    assert (await c.connect())[0]
    assert "not running" in (await recv_json(c))["error"]
    assert (await c.receive_output(timeout=5))["type"] == "websocket.close"


async def test_stats_one_sampler_shared_between_viewers(ws_users, make_ctr):
    ctr = await sync_to_async(make_ctr)("sleep", "300", memory=64 * 1024 * 1024)
    a = communicator(f"/ws/containers/{ctr.name}/stats/", ws_users["viewer"])
    b = communicator(f"/ws/containers/{ctr.id}/stats/", ws_users["admin"])
    assert (await a.connect())[0] and (await b.connect())[0]
    sa, sb = await recv_json(a), await recv_json(b)
    assert list(statsvc.samplers()) == [ctr.id]
    assert len(statsvc.samplers()[ctr.id].watchers) == 2
    for s in (sa, sb):
        assert s["running"] and s["mem"] > 0 and s["mem_limit"] == 64 * 1024 * 1024
        assert s["pids"] >= 1
    # Both pages get the same samples: one reading a second, not one per page.
    s2a, s2b = await recv_json(a), await recv_json(b)
    assert {sa["t"], s2a["t"]} & {sb["t"], s2b["t"]}
    assert statsvc.samplers()[ctr.id].samples <= 3
    await a.disconnect()
    assert len(statsvc.samplers()[ctr.id].watchers) == 1
    await b.disconnect()
    assert statsvc.samplers() == {}  # the last one left: sampling stopped


@pytest.fixture
def redis_layer(tmp_path, settings):
    """A private redis-server as the channel layer."""
    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server")
    sock = tmp_path / "redis.sock"
    p = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [f"unix://{sock}"]},
            }
        }
        from channels.layers import channel_layers

        channel_layers.backends.clear()
        yield
    finally:
        p.terminate()
        p.wait()
        from channels.layers import channel_layers

        channel_layers.backends.clear()


async def test_list_socket_forwards_container_events(ws_users, redis_layer):
    from channels.layers import get_channel_layer

    c = communicator("/ws/containers/", ws_users["viewer"])
    assert (await c.connect())[0]
    layer = get_channel_layer()
    cid = secrets.token_hex(32)
    await layer.group_send("events", {"type": "engine.event", "event": {
        "seq": 1, "type": "image", "action": "pull", "id": "busybox", "attrs": {}}})  # fmt: skip
    await layer.group_send("events", {"type": "engine.event", "event": {
        "seq": 2, "type": "container", "action": "die", "id": cid, "attrs": {"name": "x"}}})  # fmt: skip
    msg = await recv_json(c)  # only the container event reaches the page
    assert msg == {"id": cid, "action": "die", "name": "x"}
    await c.disconnect()
    c = communicator("/ws/containers/", ws_users["anonymous"])
    assert await c.connect() == (False, 4403)
