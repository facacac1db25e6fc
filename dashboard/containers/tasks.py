"""Celery tasks of the containers pages (queue `quick`: lifecycle actions)."""

from __future__ import annotations

from types import SimpleNamespace

from celery import shared_task


@shared_task(name="containers.stop")
def stop_container(username: str, ref: str, timeout: float | None, address: str = "") -> str:
    """Stop with a grace period (which can be long), then record the outcome.

    Safe to retry: stopping a stopped container is a no-op for the engine."""
    from django.contrib.auth.models import User

    from dashboard.accounts.audit import record
    from dashboard.services import containers as svc

    user = User.objects.filter(username=username).first()
    request = SimpleNamespace(META={"REMOTE_ADDR": address}, user=user)
    try:
        name = svc.act(user, ref, "stop", timeout=timeout)
    except svc.EngineError as e:
        record(request, "container.stop", target=ref, params={"timeout": timeout}, result=str(e))
        raise
    record(request, "container.stop", target=name, params={"timeout": timeout})
    return name
