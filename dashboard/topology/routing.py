"""Websocket routes of this app (collected by dashboard/routing.py)."""

from django.urls import path

from dashboard.topology.consumers import TopologyConsumer

websocket_urlpatterns: list = [path("ws/topology/", TopologyConsumer.as_asgi())]
