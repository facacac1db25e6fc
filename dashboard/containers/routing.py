"""Websocket routes of this app (collected by dashboard/routing.py)."""

from django.urls import path

from dashboard.containers import consumers

websocket_urlpatterns: list = [
    path("ws/containers/", consumers.ContainerListConsumer.as_asgi()),
    path("ws/containers/<str:ref>/logs/", consumers.LogsConsumer.as_asgi()),
    path("ws/containers/<str:ref>/stats/", consumers.StatsConsumer.as_asgi()),
    path("ws/containers/<str:ref>/terminal/", consumers.TerminalConsumer.as_asgi()),
]
