"""Websocket routes of this app (collected by dashboard/routing.py)."""

websocket_urlpatterns: list = []
