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


@tasks_api.tracked("long.container_run")
def run_with_pull(ctx, opts: dict, start: bool = True, address: str = "") -> dict:
    """`run` of an image that is not here yet: pull it (progress per layer, as on the
    images page), then create and start. Safe to retry: a pull of what is present is
    cheap, and a second create is refused by name before anything is made."""
    from dashboard.accounts.audit import record
    from dashboard.images.tasks import registry_progress
    from dashboard.services import containers as svc
    from dashboard.services import images
    from engine.containers.options import CreateOptions

    options = CreateOptions.from_dict(opts)
    request = SimpleNamespace(META={"REMOTE_ADDR": address}, user=ctx.user)
    params = svc.params_of(options)
    try:
        if svc.needs_pull(ctx.user, options.image):
            images.pull(ctx.user, options.image, progress=registry_progress(ctx))
        ctx.progress({"summary": f"creating the container from {options.image}"})
        c = svc.run(ctx.user, options, start=start)
    except svc.FormErrors as e:
        record(request, "container.run", target=options.name, params=params,
               result="; ".join(e.errors.values()))  # fmt: skip
        raise svc.EngineError("; ".join(e.errors.values())) from None
    except svc.EngineError as e:
        record(request, "container.run", target=options.name, params=params, result=str(e))
        raise
    record(request, "container.run", target=c.name, params=params)
    ctx.progress({"summary": f"{'started' if start else 'created'} {c.name}"})
    return {"container": c.name, "id": c.id}
