"""Tasks only the tests' workers load (`celery worker -I tests.dashboard.live.tasks_for_tests`):
steps with progress, at a pace a test can interrupt."""

from __future__ import annotations

import time

from dashboard.live import tasks_api


@tasks_api.tracked("long.test_steps")
def steps(ctx, n: int = 5, pause: float = 0.05) -> dict:
    for i in range(n):
        ctx.progress({"id": "layer0", "status": "step", "current": i + 1, "total": n})
        time.sleep(pause)
    return {"steps": n}


@tasks_api.tracked("long.test_fails")
def fails(ctx, message: str = "boom") -> dict:
    ctx.line("about to fail")
    raise tasks_api.TaskError(message)


class Flaky(Exception):
    """Stands for a transient failure (a registry that cannot be reached for a moment)."""


@tasks_api.tracked("long.test_flaky", retry_on=(Flaky,), max_retries=2, retry_delay=0.2)
def flaky(ctx, failures: int = 1) -> dict:
    from dashboard.live.models import TaskRecord

    attempt = TaskRecord.objects.get(pk=ctx.task_id).attempts
    ctx.line(f"attempt {attempt}")
    if attempt <= failures:
        raise Flaky(f"transient failure {attempt}")
    return {"attempt": attempt}
