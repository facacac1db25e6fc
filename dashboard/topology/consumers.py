"""ws/topology/: the live diagram. A snapshot on connect, then diffs and rates.

Messages to the page (JSON):
  {"type": "snapshot", "version": N, "graph": {...}, "rates": {...}}
  {"type": "diff", "version": N, "diff": {"nodes": {"add", "remove", "update"}, "edges": ...}}
  {"type": "rates", "rates": {edge id: {"in": B/s, "out": B/s}}}
From the page: {"type": "resync"} (it missed a version) -> a new snapshot.

The consumer joins the channel-layer group "events" (fed by the relay of
dashboard/live) and hands each event to this process's Keeper, which rebuilds
once for all viewers and sends each one the same diff.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard.accounts.roles import ws_role
from dashboard.topology.keeper import keeper

EVENTS_GROUP = "events"


class TopologyConsumer(AsyncWebsocketConsumer):
    joined = False

    async def connect(self) -> None:
        if not await ws_role(self.scope, "viewer"):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(EVENTS_GROUP, self.channel_name)
        await self.accept()
        self.joined = True
        snapshot = await keeper().join(self, self._push)
        await self._push(snapshot)

    async def disconnect(self, code: int) -> None:
        if self.joined:
            self.joined = False
            await keeper().leave(self)
            await self.channel_layer.group_discard(EVENTS_GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            msg = json.loads(text_data or "{}")
        except json.JSONDecodeError:
            return
        if msg.get("type") == "resync":
            k = keeper()
            await k.leave(self)
            await self._push(await k.join(self, self._push))

    async def engine_event(self, message: dict[str, Any]) -> None:
        """From the relay: {"type": "engine.event", "event": {...}}."""
        keeper().poke(message.get("event") or {})

    async def _push(self, msg: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(msg, separators=(",", ":")))
