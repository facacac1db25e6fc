"""Long operations run by Celery: one TaskRecord per task (who, what, state).

The record is the durable summary the tasks page lists; the task's progress lives in
a Redis stream (dashboard/live/tasks_api.py), which is what a page follows live.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

PENDING, RUNNING, SUCCESS, FAILURE = "pending", "running", "success", "failure"
STATE_CHOICES = [(s, s) for s in (PENDING, RUNNING, SUCCESS, FAILURE)]
FINAL = (SUCCESS, FAILURE)


class TaskRecord(models.Model):
    id = models.CharField(max_length=64, primary_key=True)  # = the Celery task id
    kind = models.CharField(max_length=64, db_index=True)  # e.g. image.pull
    task_name = models.CharField(max_length=128)  # the Celery task's name, e.g. long.image_pull
    target = models.CharField(max_length=255, blank=True, default="")  # e.g. busybox:latest
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    username = models.CharField(max_length=150, blank=True, default="")  # kept if user goes
    params = models.JSONField(default=dict, blank=True)  # the task's kwargs, secrets masked
    state = models.CharField(max_length=16, choices=STATE_CHOICES, default=PENDING, db_index=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, default="")  # hostname:pid
    attempts = models.PositiveIntegerField(default=0)  # runs begun (a redelivery adds one)
    summary = models.CharField(max_length=255, blank=True, default="")  # last progress line
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.kind} {self.target} ({self.state})"

    @property
    def final(self) -> bool:
        return self.state in FINAL
