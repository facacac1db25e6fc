"""Celery tasks. Like views, they reach the engine only through dashboard.core.services."""

from __future__ import annotations

from typing import Any

from dashboard.celery import app
from dashboard.core import services


@app.task(name="dashboard.core.tasks.engine_info")
def engine_info() -> dict[str, Any]:
    """The engine's info, computed by a worker (routed to `quick` by default)."""
    return services.engine_info()
