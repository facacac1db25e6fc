"""Autodiscovered by Celery: importing tasks_api in every worker connects its handler
for pool processes lost mid-task (tasks themselves live in each app's tasks.py)."""

from dashboard.live import tasks_api  # noqa: F401
