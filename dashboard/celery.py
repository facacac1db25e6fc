"""The Celery app: `celery -A dashboard.celery:app worker -Q quick` (serve starts one
worker per queue). Its settings are Django's CELERY_* ones (dashboard/settings.py)."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Declared here rather than in settings so settings need not import kombu. `quick`
# takes lifecycle actions, `long` pulls, builds, pushes and prunes (CELERY_TASK_ROUTES).
app.conf.task_queues = (Queue("quick"), Queue("long"))
# Finds dashboard/core/tasks.py (and any other app's tasks.py) once Django is set up.
app.autodiscover_tasks()
