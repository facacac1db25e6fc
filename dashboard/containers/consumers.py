"""Websockets of the containers pages: the live list, logs, stats and the terminal.

Logs and terminal bytes go from the file / pty straight to this socket -- never
through the channel layer -- with flow control of our own: every data message
carries the running byte count (``end``) and the page answers ``{"ack": N}`` once
it has drawn up to N. With more than WINDOW bytes sent and not acknowledged, the
consumer stops reading until an ack arrives, so a fast writer cannot fill the
server's memory or the browser's. Disconnecting cancels the reading task and closes
the file / hangs the terminal up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard.accounts.audit import record
from dashboard.accounts.roles import ws_role
from dashboard.services import containers as svc
from dashboard.services import logs as logsvc
from dashboard.services import stats as statsvc
from dashboard.services import terminal as termsvc

WINDOW = 512 * 1024  # unacknowledged bytes before the sender pauses
POLL = 0.05  # seconds between looks at a log file with nothing new
STATE_EVERY = 1.0  # seconds between checks whether a followed container still runs

# Logs, stats and terminal consumers use no channel layer at all (an alias that is not
# configured gives None): their bytes never pass through it, and they work without Redis.
NO_LAYER = "berth-no-channel-layer"

DENIED = 4403
NOT_FOUND = 4404


def _query(scope: dict) -> dict[str, str]:
    qs = parse_qs(scope.get("query_string", b"").decode())
    return {k: v[-1] for k, v in qs.items()}


class _Flow:
    """Sent/acknowledged byte counts; ``wait()`` returns once there is room."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.sent = 0
        self.acked = 0
        self._room = asyncio.Event()
        self._room.set()

    def add(self, n: int) -> None:
        self.sent += n
        if self.sent - self.acked > self.window:
            self._room.clear()

    def ack(self, n: Any) -> None:
        try:
            n = int(n)
        except (TypeError, ValueError):
            return
        if self.acked < n <= self.sent:
            self.acked = n
        if self.sent - self.acked <= self.window:
            self._room.set()

    @property
    def paused(self) -> bool:
        return not self._room.is_set()

    async def wait(self) -> None:
        await self._room.wait()


class ContainerListConsumer(AsyncWebsocketConsumer):
    """ws/containers/: tells the page which container changed (from the engine's
    events, relayed to the channel-layer group "events"); the page then reloads its
    rows with its own filter."""

    async def connect(self) -> None:
        if not await ws_role(self.scope, "viewer"):
            await self.close(code=DENIED)
            return
        await self.channel_layer.group_add("events", self.channel_name)
        self.joined = True
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "joined", False):
            await self.channel_layer.group_discard("events", self.channel_name)

    async def engine_event(self, message: dict) -> None:
        ev = message.get("event") or {}
        if ev.get("type") != "container":
            return
        attrs = ev.get("attrs") or {}
        await self.send(
            text_data=json.dumps(
                {"id": ev.get("id", ""), "action": ev.get("action", ""), "name": attrs.get("name")}
            )
        )


class LogsConsumer(AsyncWebsocketConsumer):
    """ws/containers/<ref>/logs/?tail=N&since=T&stream=stdout|stderr|both

    Sends ``{"lines": [[time, stream, text], ...], "end": bytes}`` then, while
    following, ``{"running": bool}`` when that changes. The page acks ``end``."""

    channel_layer_alias = NO_LAYER

    async def connect(self) -> None:
        self.tail: logsvc.LogTail | None = None
        self.task: asyncio.Task | None = None
        if not await ws_role(self.scope, "viewer"):
            await self.close(code=DENIED)
            return
        q = _query(self.scope)
        try:
            tail = int(q["tail"]) if q.get("tail", "").strip() not in ("", "all") else None
            if tail is not None and tail < 0:
                raise ValueError
            since = logsvc.parse_since(q.get("since", ""))
        except (ValueError, svc.EngineError):
            await self.close(code=4400)
            return
        stream = q.get("stream", "both")
        streams = ("stdout", "stderr") if stream not in ("stdout", "stderr") else (stream,)
        self.ref = self.scope["url_route"]["kwargs"]["ref"]
        user = self.scope["user"]
        try:
            self.cid, self.tail = await asyncio.to_thread(
                logsvc.open_tail, user, self.ref, tail=tail, since=since, streams=streams
            )
        except svc.NotFound:
            await self.close(code=NOT_FOUND)
            return
        self.follow = q.get("follow", "1") != "0"
        self.flow = _Flow()
        await self.accept()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.tail is not None
        loop = asyncio.get_running_loop()
        user = self.scope["user"]
        running = None
        next_check = 0.0
        while True:
            await self.flow.wait()
            lines, n = self.tail.read()
            if n:
                # Only what is sent counts against the window: partial or filtered-out
                # records cost the page nothing.
                if lines:
                    self.flow.add(n)
                    await self.send(text_data=json.dumps({"lines": lines, "end": self.flow.sent}))
                continue
            now = loop.time()
            if now >= next_check:
                next_check = now + STATE_EVERY
                is_running = await asyncio.to_thread(svc.is_running, user, self.cid)
                if is_running != running:
                    running = is_running
                    await self.send(text_data=json.dumps({"running": running}))
                if not self.follow:
                    await self.send(text_data=json.dumps({"done": True}))
                    return
            await asyncio.sleep(POLL)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            msg = json.loads(text_data or "{}")
        except ValueError:
            return
        if isinstance(msg, dict) and "ack" in msg:
            self.flow.ack(msg["ack"])

    async def disconnect(self, code: int) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.tail is not None:
            self.tail.close()


class StatsConsumer(AsyncWebsocketConsumer):
    """ws/containers/<ref>/stats/: one ``{"t", "cpu", "mem", ...}`` a second, from the
    container's shared sampler (dashboard/services/stats.py)."""

    channel_layer_alias = NO_LAYER

    async def connect(self) -> None:
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        if not await ws_role(self.scope, "viewer"):
            await self.close(code=DENIED)
            return
        ref = self.scope["url_route"]["kwargs"]["ref"]
        try:
            c = await asyncio.to_thread(svc.get, self.scope["user"], ref)
        except svc.NotFound:
            await self.close(code=NOT_FOUND)
            return
        self.cid = c.id
        await self.accept()
        self.queue = statsvc.subscribe(self.cid)
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.queue is not None
        while True:
            msg = await self.queue.get()
            await self.send(text_data=json.dumps(msg))

    async def disconnect(self, code: int) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.queue is not None:
            statsvc.unsubscribe(self.cid, self.queue)


ROLE_RECHECK = 3.0  # seconds between role checks of an open terminal


class TerminalConsumer(AsyncWebsocketConsumer):
    """ws/containers/<ref>/terminal/?rows=R&cols=C: `exec -it /bin/sh` in the container.

    Output goes to the page as binary frames; the page sends ``{"in": text}``,
    ``{"resize": [rows, cols]}`` and ``{"ack": bytes}``. Operators and admins only."""

    channel_layer_alias = NO_LAYER

    async def connect(self) -> None:
        self.term: termsvc.Terminal | None = None
        self.flow = _Flow()
        self.reading = False
        if not await ws_role(self.scope, "operator"):
            await self.close(code=DENIED)
            return
        q = _query(self.scope)
        ref = self.scope["url_route"]["kwargs"]["ref"]
        user = self.scope["user"]
        try:
            c = await asyncio.to_thread(svc.get, user, ref)
            if c.state != "running":
                raise svc.InvalidArgument(f"container {c.name} is not running")
            self.term = await asyncio.to_thread(
                termsvc.Terminal, user, c.id, rows=q.get("rows", 24), cols=q.get("cols", 80)
            )
        except svc.NotFound:
            await self.close(code=NOT_FOUND)
            return
        except (svc.EngineError, ValueError) as e:
            await self.accept()
            await self.send(text_data=json.dumps({"error": str(e)}))
            await self.close(code=4409)
            return
        self.cname = c.name
        await self.accept()
        client = self.scope.get("client") or ("", 0)
        request = SimpleNamespace(META={"REMOTE_ADDR": client[0]}, user=user)
        await database_sync_to_async(record)(
            request, "container.terminal", target=c.name, params={"cmd": "/bin/sh"}
        )
        self.loop = asyncio.get_running_loop()
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.sender = asyncio.create_task(self._send_out())
        self._start_reading()
        self.waiter = asyncio.create_task(self._wait_exit())

    async def _send_out(self) -> None:
        # One sender keeps the output in order.
        while (data := await self.out.get()) is not None:
            await self.send(bytes_data=data)

    def _start_reading(self) -> None:
        if not self.reading and self.term is not None and self.term.master >= 0:
            self.loop.add_reader(self.term.master, self._readable)
            self.reading = True

    def _stop_reading(self) -> None:
        if self.reading and self.term is not None and self.term.master >= 0:
            self.loop.remove_reader(self.term.master)
        self.reading = False

    def _readable(self) -> None:
        assert self.term is not None
        data = self.term.read()
        if data is None:  # the session ended
            self._stop_reading()
            return
        if data:
            self.flow.add(len(data))
            self.out.put_nowait(data)  # bounded by the window: reading pauses past it
            if self.flow.paused:
                self._stop_reading()  # resumed by an ack

    async def _wait_exit(self) -> None:
        assert self.term is not None
        checked = time.monotonic()
        while self.term.finished() is None:
            await asyncio.sleep(0.2)
            if time.monotonic() - checked >= ROLE_RECHECK:
                # A shell outlives the page load: a user demoted or deactivated since
                # loses it within seconds, not when they close the tab.
                checked = time.monotonic()
                if not await ws_role(self.scope, "operator"):
                    self._stop_reading()
                    await asyncio.to_thread(self.term.close)
                    self.term = None
                    await self.send(text_data=json.dumps({"error": "access revoked"}))
                    await self.close(code=DENIED)
                    return
        # Whatever the shell wrote last is still in the pty.
        self._stop_reading()
        while data := self.term.read():
            self.out.put_nowait(data)
        self.out.put_nowait(None)
        await self.sender
        await self.send(text_data=json.dumps({"exit": self.term.exit_code}))
        await self.close()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.term is None:
            return
        if bytes_data:
            await asyncio.to_thread(self.term.write, bytes_data)
            return
        try:
            msg = json.loads(text_data or "{}")
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if "in" in msg and isinstance(msg["in"], str):
            await asyncio.to_thread(self.term.write, msg["in"].encode())
        if "resize" in msg:
            with contextlib.suppress(ValueError, TypeError, OSError):
                rows, cols = msg["resize"]
                self.term.resize(rows, cols)
        if "ack" in msg:
            self.flow.ack(msg["ack"])
            if not self.flow.paused:
                self._start_reading()

    async def disconnect(self, code: int) -> None:
        for task in (getattr(self, "waiter", None), getattr(self, "sender", None)):
            if task is not None:
                task.cancel()
        if self.term is not None:
            self._stop_reading()
            await asyncio.to_thread(self.term.close)
