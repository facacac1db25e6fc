"""System page: disk use (`system df`) and prune with a confirmation that lists what
will go; links to users and teams for admins. Prune is admin-only: it removes
containers, images and volumes of every user on the host at once."""

from __future__ import annotations

from django.contrib import messages
from django.views.decorators.http import require_safe

from dashboard.accounts.audit import record
from dashboard.accounts.roles import has_role, role_required
from dashboard.live import tasks_api
from dashboard.resources.htmx import invalid_status, page, to_task
from dashboard.services import system as svc


def _flags(args) -> tuple[bool, bool]:
    return args.get("all") == "1", args.get("volumes") == "1"


@role_required("viewer")
@require_safe
def system(request):
    ctx = {"df": svc.disk_usage(request.user), "is_admin": has_role(request.user, "admin")}
    return page(request, "resources/system.html", ctx)


@role_required("admin")
def system_prune(request):
    """GET: what would go (with the chosen flags). POST: a task on the long queue prunes
    (its page follows it, and says what went), exactly what the confirmation listed:
    when the list changed since, the new one is shown to confirm. Audited from the start."""
    args = request.POST if request.method == "POST" else request.GET
    all_images, volumes = _flags(args)
    flags = {"all": all_images, "volumes": volumes}
    doomed = svc.prune_preview(request.user, all_images, volumes)
    key = svc.preview_key(doomed)
    ctx = {"doomed": doomed, "key": key, **flags}
    if request.method != "POST":
        return page(request, "resources/system_prune.html", ctx)
    if request.POST.get("confirm") != key:
        messages.warning(request, f"Nothing was pruned: {svc.LIST_CHANGED}. Confirm this list.")
        record(request, "system.prune", "system", flags, result=f"refused: {svc.LIST_CHANGED}")
        return page(request, "resources/system_prune.html", ctx, invalid_status(request, 409))
    kwargs = {"all_images": all_images, "volumes": volumes, "expect": key}
    task_id = tasks_api.start(request.user, "system.prune", "long.system_prune", kwargs,
                              target="system")  # fmt: skip
    # On the record now: the task's end (or its worker's death) sets the result.
    record(request, "system.prune", "system", {**flags, "task": task_id}, result="started")
    return to_task(request, task_id)
