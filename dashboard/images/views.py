"""Images pages: list, detail (history, inspect), and the forms that start image tasks.

Reads need the viewer role; every change the operator role (checked here, on the
server). Quick changes (tag, remove) run in the request; long ones (pull, push, build,
import, export, prune) start a task and send the browser to its page, which follows
the task live. Every change is audited.
"""

from __future__ import annotations

import json
import re

from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.accounts.audit import record
from dashboard.accounts.roles import has_role, role_required
from dashboard.images import transfers
from dashboard.live import tasks_api
from dashboard.services import images
from dashboard.services.images import EngineError

ID_RE = re.compile(r"^[0-9a-f]{12,64}$")
MAX_DOCKERFILE = 256 * 1024


def _go(request, url: str) -> HttpResponse:
    """Redirect; an htmx request gets HX-Redirect so the whole page changes."""
    if request.htmx:
        resp = HttpResponse(status=204)
        resp["HX-Redirect"] = url
        return resp
    return redirect(url)


def _start(request, kind: str, task: str, kwargs: dict, target: str, audit: dict) -> str:
    tid = tasks_api.start(request.user, kind, task, kwargs, target=target)
    record(request, kind, target=target, params={**audit, "task": tid}, result="started")
    return tid


def _image_ref(image_id: str) -> str:
    if not ID_RE.match(image_id):
        raise Http404(f"not an image ID: {image_id!r}")
    return f"sha256:{image_id}" if len(image_id) == 64 else image_id


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", text or "") if w]


# -- reads ------------------------------------------------------------------------------------


@role_required("viewer")
def image_list(request):
    rows = images.images_by_id(request.user)
    ctx = {"images": rows, "can_change": has_role(request.user, "operator")}
    template = "images/_rows.html" if request.htmx else "images/list.html"
    return render(request, template, ctx)


@role_required("viewer")
def image_detail(request, image_id: str):
    ref = _image_ref(image_id)
    try:
        data = images.inspect(request.user, ref)
        hist = images.history(request.user, ref)
    except EngineError as e:
        raise Http404(str(e)) from None
    ctx = {
        "image_id": image_id,
        "inspect": json.dumps(data, indent=2, default=str),
        "tags": data.get("RepoTags", []),
        "history": hist,
        "can_change": has_role(request.user, "operator"),
    }
    return render(request, "images/detail.html", ctx)


# -- quick changes ----------------------------------------------------------------------------


@require_POST
@role_required("operator")
def tag(request, image_id: str):
    ref = _image_ref(image_id)
    dst = request.POST.get("target", "").strip()
    try:
        images.check_reference(dst, "new tag")
        images.tag(request.user, ref, dst)
    except EngineError as e:
        record(request, "image.tag", target=dst or ref, params={"source": ref}, result=str(e))
        messages.error(request, f"tag failed: {e}")
    else:
        record(request, "image.tag", target=dst, params={"source": ref})
        messages.success(request, f"tagged {dst}")
    return _go(request, reverse("images:detail", args=[image_id]))


@require_POST
@role_required("operator")
def remove(request):
    ref = request.POST.get("ref", "").strip()
    force = request.POST.get("force") == "1"
    if not ref:
        messages.error(request, "remove: no image given")
        return _go(request, reverse("images:list"))
    if ID_RE.match(ref):
        ref = _image_ref(ref)
    try:
        lines = images.remove(request.user, ref, force=force)
    except EngineError as e:
        record(request, "image.remove", target=ref, params={"force": force}, result=str(e))
        messages.error(request, f"remove failed: {e}")
    else:
        record(request, "image.remove", target=ref, params={"force": force, "lines": lines})
        messages.success(request, "; ".join(lines) or f"removed {ref}")
    return _go(request, reverse("images:list"))


# -- long operations (tasks) -------------------------------------------------------------------


def _form_error(request, template: str, error: str, ctx: dict | None = None) -> HttpResponse:
    return render(request, template, {"error": error, **(ctx or {})}, status=400)


@require_POST
@role_required("operator")
def pull(request):
    ref = request.POST.get("ref", "")
    try:
        ref = images.check_reference(ref)
    except EngineError as e:
        return _form_error(request, "images/error.html", f"pull: {e}")
    tid = _start(request, "image.pull", "long.image_pull", {"ref": ref}, ref, {"ref": ref})
    return _go(request, reverse("live:task", args=[tid]))


@require_POST
@role_required("operator")
def push(request):
    ref = request.POST.get("ref", "")
    try:
        ref = images.check_reference(ref)
    except EngineError as e:
        return _form_error(request, "images/error.html", f"push: {e}")
    tid = _start(request, "image.push", "long.image_push", {"ref": ref}, ref, {"ref": ref})
    return _go(request, reverse("live:task", args=[tid]))


def _build_args(text: str) -> dict[str, str]:
    out = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        key, eq, value = line.partition("=")
        if not key or not eq:
            raise ValueError(f"build argument {line!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


@require_http_methods(["GET", "POST"])
@role_required("operator")
def build(request):
    if request.method == "GET":
        return render(request, "images/build.html", {"form": {}})
    form = request.POST
    ctx = {"form": form}
    text = form.get("dockerfile_text", "")
    upload = request.FILES.get("context")
    try:
        tags = [images.check_reference(t, "tag") for t in _words(form.get("tags", ""))]
        args = _build_args(form.get("build_args", ""))
    except (EngineError, ValueError) as e:
        return _form_error(request, "images/build.html", str(e), ctx)
    if bool(text.strip()) == bool(upload):
        return _form_error(
            request, "images/build.html", "give either a Dockerfile or a context tar", ctx
        )
    if len(text) > MAX_DOCKERFILE:
        return _form_error(request, "images/build.html", "the Dockerfile is too long", ctx)
    name = transfers.save_upload(upload) if upload else transfers.save_text(text)
    kwargs = {
        "upload": name,
        "tags": tags,
        "dockerfile": form.get("dockerfile_path", "").strip() if upload else "",
        "build_args": args,
        "target": form.get("target", "").strip(),
        "no_cache": form.get("no_cache") == "1",
    }
    source = f"upload {upload.name} ({upload.size} bytes)" if upload else "pasted Dockerfile"
    target = ", ".join(tags) or "(untagged)"
    audit = {k: v for k, v in kwargs.items() if k != "upload"} | {"source": source}
    tid = _start(request, "image.build", "long.image_build", kwargs, target, audit)
    return _go(request, reverse("live:task", args=[tid]))


@require_POST
@role_required("operator")
def import_archive(request):
    upload = request.FILES.get("archive")
    mode = request.POST.get("mode", "load")
    ref = request.POST.get("ref", "").strip()
    if upload is None:
        return _form_error(request, "images/error.html", "import: no archive uploaded")
    if mode not in ("load", "rootfs"):
        return _form_error(request, "images/error.html", f"import: unknown mode {mode!r}")
    if ref:
        try:
            images.check_reference(ref)
        except EngineError as e:
            return _form_error(request, "images/error.html", f"import: {e}")
    name = transfers.save_upload(upload)
    kwargs = {"upload": name, "ref": ref, "mode": mode}
    audit = {"file": upload.name, "size": upload.size, "mode": mode, "ref": ref}
    tid = _start(request, "image.import", "long.image_import", kwargs, ref or upload.name, audit)
    return _go(request, reverse("live:task", args=[tid]))


@require_POST
@role_required("operator")
def export(request):
    refs = _words(request.POST.get("refs", ""))
    if not refs:
        return _form_error(request, "images/error.html", "export: no image given")
    target = ", ".join(refs)
    tid = _start(request, "image.export", "long.image_export", {"refs": refs}, target, {})
    return _go(request, reverse("live:task", args=[tid]))


@role_required("operator")
def export_download(request, task_id: str):
    try:
        path = transfers.export_file(task_id)
    except transfers.TransferError as e:
        raise Http404(str(e)) from None
    return FileResponse(open(path, "rb"), as_attachment=True, filename=f"images-{task_id}.tar")


@require_http_methods(["GET", "POST"])
@role_required("operator")
def prune(request):
    all_ = request.POST.get("all", request.GET.get("all", "")) == "1"
    if request.method == "GET":
        goes = images.prune_preview(request.user, all=all_)
        return render(request, "images/prune.html", {"goes": goes, "all": all_})
    if request.POST.get("confirm") != "yes":
        return _form_error(request, "images/error.html", "prune: not confirmed")
    tid = _start(request, "image.prune", "long.image_prune", {"all": all_}, "images", {})
    return _go(request, reverse("live:task", args=[tid]))
