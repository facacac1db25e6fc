"""Overview page: host, kernel, cgroup version, runtime, counts, host CPU/memory and
disk use by images, containers and volumes (all through the service layer)."""

from __future__ import annotations

from django.views.decorators.http import require_safe

from dashboard.accounts.roles import has_role, role_required
from dashboard.resources.htmx import page
from dashboard.services import system


@role_required("viewer")
@require_safe
def overview(request):
    data = system.overview(request.user)
    data["is_admin"] = has_role(request.user, "admin")
    return page(request, "overview.html", data)
