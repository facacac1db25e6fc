"""The audit log: record() for every state-changing dashboard action.

CLI actions reach the log from the engine's events (each carries its actor).
"""

from __future__ import annotations

import re
from typing import Any

from django.utils import timezone

SECRET_KEY_RE = re.compile(r"pass|secret|token|key|credential|auth", re.I)


def mask(params: Any) -> Any:
    """Secrets masked: values of keys that look secret, and K=V env entries likewise."""
    if isinstance(params, dict):
        return {
            k: ("****" if SECRET_KEY_RE.search(str(k)) and v else mask(v))
            for k, v in params.items()
        }
    if isinstance(params, list | tuple):
        return [mask(v) for v in params]
    if isinstance(params, str) and "=" in params:
        k, _, v = params.partition("=")
        if SECRET_KEY_RE.search(k) and v:
            return f"{k}=****"
    return params


def client_address(request: Any) -> str:
    return request.META.get("REMOTE_ADDR", "") if request is not None else ""


def record(
    request: Any,
    action: str,
    target: str = "",
    params: dict | None = None,
    result: str = "ok",
    host_changes: list | None = None,
    *,
    user: Any = None,
) -> None:
    """Append an entry. ``request`` gives the user and address (or pass ``user``)."""
    from dashboard.accounts.models import AuditEntry

    u = user if user is not None else getattr(request, "user", None)
    AuditEntry.objects.create(
        ts=timezone.now(),
        actor=getattr(u, "username", "") or "anonymous",
        source="web",
        address=client_address(request),
        action=action,
        target=target,
        params=mask(params or {}),
        result=result,
        host_changes=host_changes or [],
    )
