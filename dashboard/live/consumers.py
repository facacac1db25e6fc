"""Websockets of the events feed and of a task's progress.

Both follow the same rule: the client says where its snapshot ended (an events seq, a
progress entry ID); the consumer joins its channel group *first*, then reads the log
from that point, so whatever is appended meanwhile arrives either from the read or
from the group, and the position decides which copy is sent: no gap, no duplicate. A
group message that skips ahead (the channel layer drops messages past its capacity)
makes the consumer read the log again rather than lose anything.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard.accounts.roles import ws_role
from dashboard.live import tasks_api
from dashboard.services import events as events_service

CATCH_UP_BATCH = 1000
TASK_POLL = 2.0  # seconds: a task page re-reads its stream this often without news
DENIED, NOT_FOUND, BAD_REQUEST = 4403, 4404, 4400


def _query(scope: dict) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode(errors="replace"))


class EventsConsumer(AsyncWebsocketConsumer):
    """ws/events/?after=SEQ&type=container,image&action=start: events after SEQ, then live.
    Each message is one event dict (dashboard.services.events)."""

    async def connect(self) -> None:
        if not await ws_role(self.scope, "viewer"):
            await self.close(code=DENIED)
            return
        q = _query(self.scope)
        after = (q.get("after") or [""])[0]
        if after and not after.isdigit():
            await self.close(code=BAD_REQUEST)
            return
        self.types = events_service.parse_filter(q.get("type", []))
        self.actions = events_service.parse_filter(q.get("action", []))
        self.lock = asyncio.Lock()
        # In the group, with the position fixed, before the client hears "accepted".
        await self.channel_layer.group_add("events", self.channel_name)
        # Without a position: from now on (the page had no snapshot to continue).
        start = int(after) if after else await sync_to_async(events_service.last_seq)()
        self.seq = start
        await self.accept()
        await self.catch_up()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "seq"):
            await self.channel_layer.group_discard("events", self.channel_name)

    async def catch_up(self) -> None:
        """Send everything in the log after self.seq."""
        async with self.lock:
            while True:
                batch = await sync_to_async(events_service.after, thread_sensitive=False)(
                    self.seq, CATCH_UP_BATCH
                )
                for ev in batch:
                    await self._send(ev)
                if len(batch) < CATCH_UP_BATCH:
                    return

    async def _send(self, ev: dict) -> None:
        self.seq = ev["seq"]
        if events_service.matches(ev, self.types, self.actions):
            await self.send(text_data=json.dumps(ev))

    async def engine_event(self, message: dict[str, Any]) -> None:
        ev = message["event"]
        if ev["seq"] <= self.seq:
            return  # already sent from the log
        if ev["seq"] == self.seq + 1:
            async with self.lock:
                if ev["seq"] == self.seq + 1:
                    await self._send(ev)
                    return
        await self.catch_up()  # a gap: read the log instead


class TaskConsumer(AsyncWebsocketConsumer):
    """ws/tasks/<id>/?after=SID: the task's progress entries after SID, then live, until
    its final state entry (then the server closes). Each message is
    {"sid": entry id, "data": {...}}."""

    async def connect(self) -> None:
        if not await ws_role(self.scope, "viewer"):
            await self.close(code=DENIED)
            return
        self.task_id = self.scope["url_route"]["kwargs"]["task_id"]
        after = (_query(self.scope).get("after") or [""])[0]
        if after and not tasks_api.valid_sid(after):
            await self.close(code=BAD_REQUEST)
            return
        if not await database_sync_to_async(_task_exists)(self.task_id):
            await self.close(code=NOT_FOUND)
            return
        self.sid = after
        self.lock = asyncio.Lock()
        self.done = False
        self.group = tasks_api.GROUP.format(self.task_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.catch_up()
        if not self.done:
            self.poller = asyncio.ensure_future(self.poll())

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        poller = getattr(self, "poller", None)
        if poller is not None:
            poller.cancel()

    async def catch_up(self) -> None:
        async with self.lock:
            if self.done:
                return
            rows = await sync_to_async(tasks_api.entries, thread_sensitive=False)(
                self.task_id, self.sid
            )
            for sid, data in rows:
                self.sid = sid
                await self.send(text_data=json.dumps({"sid": sid, "data": data}))
                if data.get("event") == "state" and data.get("state") in ("success", "failure"):
                    self.done = True
                    break
        if self.done:
            await self.close()

    async def poll(self) -> None:
        """Notifications can be lost and a dead worker sends none: look now and then,
        and let a task whose worker stopped beating fail (its final entry ends this)."""
        while not self.done:
            await asyncio.sleep(TASK_POLL)
            await database_sync_to_async(tasks_api.reap_stale)()
            await self.catch_up()

    async def task_progress(self, message: dict[str, Any]) -> None:
        await self.catch_up()


def _task_exists(task_id: str) -> bool:
    from dashboard.live.models import TaskRecord

    return TaskRecord.objects.filter(pk=task_id).exists()
