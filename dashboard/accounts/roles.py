"""Who may do what. Every view, htmx action and websocket checks here, on the server.

Use:
    @role_required("operator")            # views (403 for a logged-in user below it)
    def stop(request, cid): ...

    if not has_role(user, "operator"): ...  # anywhere (consumers: scope["user"])
    await ws_role(scope, "viewer")          # in consumers: True when allowed (read afresh)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

ORDER = {"viewer": 1, "operator": 2, "admin": 3}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def role_of(user: Any) -> str | None:
    """The highest role granted to ``user`` directly or through a team, or None."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if user.is_superuser:
        return "admin"
    cached = getattr(user, "_berth_role", "unset")
    if cached != "unset":
        return cached
    from django.db.models import Q

    from dashboard.accounts.models import Grant

    roles = Grant.objects.filter(Q(user=user) | Q(team__members=user)).values_list(
        "role", flat=True
    )
    best = max(roles, key=lambda r: ORDER.get(r, 0), default=None)
    user._berth_role = best
    return best


def has_role(user: Any, role: str) -> bool:
    got = role_of(user)
    return got is not None and ORDER[got] >= ORDER[role]


def _record_denied(request: Any, role: str) -> None:
    """A change forced below one's role (the page offers no such button): on the record."""
    from dashboard.accounts.audit import record

    params = {"method": request.method, "needs": role, "has": role_of(request.user) or "none"}
    record(request, "access.denied", request.path, params, result=f"refused: needs the {role} role")


def role_required(role: str) -> Callable:
    """View decorator: login required (redirect), then ``role`` or higher (else 403;
    a refused POST is audited as ``access.denied``)."""

    def deco(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, role):
                if request.method not in SAFE_METHODS:
                    _record_denied(request, role)
                raise PermissionDenied(f"needs the {role} role")
            return view(request, *args, **kwargs)

        return wrapper

    return deco


def an_active_admin_exists() -> bool:
    """Whether any active user is an admin (superuser, direct or team grant). The users
    and teams pages refuse a change after which this is False: nobody could undo it."""
    from django.contrib.auth import get_user_model
    from django.db.models import Q

    return (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(
            Q(is_superuser=True)
            | Q(berth_grants__role="admin")
            | Q(berth_teams__grants__role="admin")
        )
        .exists()
    )


def _role_now(user: Any, role: str) -> bool:
    from django.contrib.auth import get_user_model

    fresh = get_user_model().objects.filter(pk=user.pk).first()
    return fresh is not None and has_role(fresh, role)


async def ws_role(scope: dict, role: str) -> bool:
    """For consumers: the scope's user is logged in and has ``role`` now. The user is
    read afresh each call (the scope's object lives as long as the socket, with its
    role cached), so a consumer calling again later sees a demotion or deactivation."""
    from channels.db import database_sync_to_async

    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return False
    return await database_sync_to_async(_role_now)(user, role)
