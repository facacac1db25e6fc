"""System page: disk use (`system df`) and prune with a confirmation that lists what
will go; links to users and teams for admins. Prune is admin-only: it removes
containers, images and volumes of every user on the host at once."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect

from dashboard.accounts.audit import record
from dashboard.accounts.roles import has_role, role_required
from dashboard.resources.htmx import is_htmx, page
from dashboard.services import system as svc


def _flags(args) -> tuple[bool, bool]:
    return args.get("all") == "1", args.get("volumes") == "1"


@role_required("viewer")
def system(request):
    ctx = {"df": svc.disk_usage(request.user), "is_admin": has_role(request.user, "admin")}
    return page(request, "resources/system.html", ctx)


@role_required("admin")
def system_prune(request):
    """GET: what would go (with the chosen flags). POST: prune, then say what went."""
    if request.method == "POST":
        all_images, volumes = _flags(request.POST)
        params = {"all": all_images, "volumes": volumes}
        try:
            went = svc.prune(request.user, all_images, volumes)
        except svc.EngineError as e:
            record(request, "system.prune", "", params, result=f"error: {e}")
            messages.error(request, f"Prune failed: {e}")
        else:
            record(request, "system.prune", "", {**params, "removed": went})
            messages.success(
                request,
                f"Pruned {len(went['containers'])} container(s), {len(went['images'])} image "
                f"line(s), {len(went['volumes'])} volume(s); reclaimed {went['reclaimed']}.",
            )
            if not is_htmx(request):
                return redirect("resources:system")
        ctx = {"df": svc.disk_usage(request.user), "is_admin": True}
        return page(request, "resources/system.html", ctx)
    all_images, volumes = _flags(request.GET)
    ctx = {"doomed": svc.prune_preview(request.user, all_images, volumes), "all": all_images,
           "volumes": volumes}  # fmt: skip
    return page(request, "resources/system_prune.html", ctx)
