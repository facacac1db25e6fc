"""Celery tasks of the containers pages (queue `quick`: lifecycle actions).

Tracked through dashboard/live/tasks_api.py: each run has a record on the tasks page
with its progress, a worker's crash marks it failed, and a redelivered message never
runs it twice."""

from __future__ import annotations

from types import SimpleNamespace

from dashboard.live import tasks_api


@tasks_api.tracked("containers.stop")
def stop_container(ctx, ref: str, timeout: float | None = None, address: str = "") -> dict:
    """Stop with a grace period (which can be long), then audit the outcome.

    Safe to retry: stopping a stopped container is a no-op for the engine."""
    from dashboard.accounts.audit import record
    from dashboard.services import containers as svc

    request = SimpleNamespace(META={"REMOTE_ADDR": address}, user=ctx.user)
    ctx.progress({"status": f"stopping (up to {timeout if timeout is not None else 'its'} s)"})
    try:
        name = svc.act(ctx.user, ref, "stop", timeout=timeout)
    except svc.EngineError as e:
        record(request, "container.stop", target=ref, params={"timeout": timeout}, result=str(e))
        raise
    record(request, "container.stop", target=name, params={"timeout": timeout})
    return {"container": name, "state": svc.get(ctx.user, ref).state}
