"""Websocket routes: each app's routing.py adds its own; `ws/ping/` is the smoke test that
the ASGI server, the session login and the channel layer all work together."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path

from dashboard.accounts import routing as accounts_routing
from dashboard.containers import routing as containers_routing
from dashboard.images import routing as images_routing
from dashboard.live import routing as live_routing
from dashboard.resources import routing as resources_routing
from dashboard.topology import routing as topology_routing


class PingConsumer(AsyncWebsocketConsumer):
    """Answers "ping" with "pong", to users with a role (viewer or above) only.

    The answer goes through the channel layer (a message to this consumer's own
    channel) rather than straight back, so a pong proves Redis is reachable too.
    """

    async def connect(self) -> None:
        from dashboard.accounts.roles import ws_role

        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await ws_role(self.scope, "viewer"):  # logged in but granted nothing
            await self.close(code=4403)
            return
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "ping":
            await self.channel_layer.send(self.channel_name, {"type": "pong"})

    async def pong(self, event: dict[str, Any]) -> None:
        await self.send(text_data="pong")


websocket_urlpatterns = [
    path("ws/ping/", PingConsumer.as_asgi()),
    *accounts_routing.websocket_urlpatterns,
    *containers_routing.websocket_urlpatterns,
    *images_routing.websocket_urlpatterns,
    *resources_routing.websocket_urlpatterns,
    *live_routing.websocket_urlpatterns,
    *topology_routing.websocket_urlpatterns,
]
