"""Volumes pages: list, create, inspect (who uses it), remove, prune with a confirmation.

viewer: read; operator: create, remove, prune. Every change is audited, failures too.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.views.decorators.http import require_POST, require_safe

from dashboard.accounts.audit import record, record_invalid
from dashboard.accounts.roles import has_role, role_required
from dashboard.live import tasks_api
from dashboard.resources.forms import VolumeForm, add_engine_error
from dashboard.resources.htmx import after_change, invalid_status, page, to_task
from dashboard.services import volumes as svc


def _list_page(request, form=None, status=200):
    ctx = {
        "volumes": svc.list_all(request.user),
        "form": form or VolumeForm(),
        "can_change": has_role(request.user, "operator"),
    }
    return page(request, "resources/volumes.html", ctx, status)


def _after(request):
    return after_change(request, _list_page, "resources:volumes")


@role_required("viewer")
@require_safe
def volumes(request):
    return _list_page(request)


@role_required("operator")
@require_POST
def volume_create(request):
    form = VolumeForm(request.POST)
    if not form.is_valid():
        record_invalid(request, "volume.create", request.POST.get("name", ""), form)
    else:
        name = form.cleaned_data["name"]
        params = {"name": name, "labels": form.cleaned_data["labels"]}
        try:
            labels = svc.parse_labels(form.cleaned_data["labels"])
            params["labels"] = labels
            if svc.exists(request.user, name):
                raise svc.EngineError(f"a volume named {name} exists already")
            svc.create(request.user, name, labels)
        except svc.EngineError as e:
            add_engine_error(form, e)
            record(request, "volume.create", name, params, result=f"error: {e}")
        else:
            record(request, "volume.create", name, params)
            messages.success(request, f"Volume {name} created.")
            return _after(request)
    return _list_page(request, form, invalid_status(request))


@role_required("viewer")
@require_safe
def volume_detail(request, name: str):
    try:
        vol = svc.inspect(request.user, name)
    except svc.EngineError as e:
        raise Http404(str(e)) from None
    ctx = {"vol": vol, "can_change": has_role(request.user, "operator")}
    return page(request, "resources/volume_detail.html", ctx)


@role_required("operator")
@require_POST
def volume_remove(request, name: str):
    force = request.POST.get("force") == "1"
    try:
        svc.remove(request.user, name, force=force)
    except svc.EngineError as e:
        record(request, "volume.remove", name, {"force": force}, result=f"error: {e}")
        messages.error(request, f"Cannot remove volume {name}: {e}")
        return _list_page(request, status=invalid_status(request, 409))
    record(request, "volume.remove", name, {"force": force})
    messages.success(request, f"Volume {name} removed.")
    return _after(request)


@role_required("operator")
def volume_prune(request):
    """GET: the confirmation, listing what would go. POST: a task (long queue) removes
    exactly the listed volumes that are still unused (one a container took since the
    confirmation stays); the answer is that task's page."""
    all_ = request.GET.get("all") == "1" or request.POST.get("all") == "1"
    if request.method == "POST":
        names = request.POST.getlist("name")
        if not names:
            messages.info(request, "Nothing was confirmed: no volume was removed.")
            return _after(request)
        task_id = tasks_api.start(request.user, "volume.prune", "long.volume_prune",
                                  {"names": names}, target=f"{len(names)} volume(s)")  # fmt: skip
        # On the record now: the task's end (or its worker's death) sets the result.
        record(request, "volume.prune", ", ".join(names),
               {"all": all_, "confirmed": names, "task": task_id}, result="started")  # fmt: skip
        return to_task(request, task_id)
    ctx = {"doomed": svc.prune_preview(request.user, all=all_), "all": all_}
    return page(request, "resources/volume_prune.html", ctx)
