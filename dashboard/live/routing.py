"""Websocket routes of this app (collected by dashboard/routing.py)."""

from django.urls import path

from dashboard.live import consumers

websocket_urlpatterns = [
    path("ws/events/", consumers.EventsConsumer.as_asgi()),
    path("ws/tasks/<str:task_id>/", consumers.TaskConsumer.as_asgi()),
]
