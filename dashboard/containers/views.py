"""Containers pages: the list (with bulk actions), the run form, the detail tabs and
the lifecycle actions. A full page on navigation, the fragment on htmx requests.

Every view checks its role on the server (viewer reads, operator acts); every
state-changing action is audited.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard.accounts.audit import record
from dashboard.accounts.roles import has_role, role_required
from dashboard.containers.forms import RunForm
from dashboard.containers.rows import render_rows
from dashboard.services import containers as svc
from dashboard.services import logs as logsvc

TABS = ("summary", "logs", "stats", "top", "inspect", "terminal", "mounts", "networks")
OPERATOR_TABS = ("terminal",)


def _done(request, target: str, *, leave: bool = False):
    """After an action. A plain form post is redirected to ``target``. An htmx post
    gets 204 and the page stays: it shows the change when the engine's event arrives
    (detail.js / list.js), or, with ``leave`` (the container is gone), goes to
    ``target``."""
    if request.htmx:
        resp = HttpResponse(status=204)
        if leave:
            resp["HX-Redirect"] = target
        return resp
    return redirect(target)


@role_required("viewer")
def container_list(request):
    state = request.GET.get("state", "")
    q = request.GET.get("q", "")
    try:
        rows = svc.list_rows(request.user, state=state, q=q)
    except svc.InvalidArgument as e:
        return HttpResponseBadRequest(str(e))
    ctx = {
        "rows": rows,
        "state": state,
        "q": q,
        "states": svc.STATES,
        "can_act": has_role(request.user, "operator"),
    }
    ctx["rows_html"] = render_rows(rows, ctx["can_act"], filtered=bool(state or q))
    if request.htmx and request.GET.get("fragment") == "rows":
        return render(request, "containers/_rows.html", ctx)
    return render(request, "containers/list.html", ctx)


@require_POST
@role_required("operator")
def bulk(request):
    action = request.POST.get("action", "")
    ids = request.POST.getlist("ids")
    if action not in svc.ACTIONS:
        return HttpResponseBadRequest(f"unknown action {action!r}: use one of {svc.ACTIONS}")
    if not ids:
        messages.warning(request, "No containers selected.")
        return _done(request, reverse("containers:list"))
    failed = []
    for ref in ids:
        try:
            name = svc.act(request.user, ref, action)
            record(request, f"container.{action}", target=name, params={"bulk": True})
        except svc.EngineError as e:
            failed.append(f"{ref[:12]}: {e}")
            record(request, f"container.{action}", target=ref, params={"bulk": True}, result=str(e))
    done = len(ids) - len(failed)
    messages.info(request, f"{action}: {done} of {len(ids)} done.")
    for f in failed:
        messages.error(request, f)
    return _done(request, reverse("containers:list"))


@role_required("operator")
def run(request):
    is_admin = has_role(request.user, "admin")
    if request.method == "POST":
        form = RunForm(request.POST, is_admin=is_admin)
        if form.is_valid():
            opts = form.cleaned_options
            if svc.needs_pull(request.user, opts.image):
                return _run_with_pull(request, opts, form.cleaned_data["start"])
            try:
                c = svc.run(request.user, opts, start=form.cleaned_data["start"])
            except svc.FormErrors as e:
                for k, v in e.errors.items():
                    form.add_error(k if k in form.fields else None, v)
                record(request, "container.run", target=opts.name, params=svc.params_of(opts),
                       result="; ".join(e.errors.values()))  # fmt: skip
            except svc.EngineError as e:
                form.add_error(None, str(e))
                record(request, "container.run", target=opts.name, params=svc.params_of(opts),
                       result=str(e))  # fmt: skip
            else:
                record(request, "container.run", target=c.name, params=svc.params_of(opts))
                url = reverse("containers:detail", args=[c.name])
                if request.htmx:
                    resp = HttpResponse(status=204)
                    resp["HX-Redirect"] = url
                    return resp
                return redirect(url)
        elif form.refused:
            # Admin-only options asked for by someone who is not: on the record.
            record(request, "container.run", target=request.POST.get("name", ""),
                   params={"refused": sorted(form.refused)}, result="refused")  # fmt: skip
    else:
        form = RunForm(is_admin=is_admin, initial={"start": True, "restart": "no"})
    tpl = "containers/_run_form.html" if request.htmx else "containers/run.html"
    return render(request, tpl, {"form": form, "is_admin": is_admin})


def _run_with_pull(request, opts, start: bool):
    """The image is not here: pull then run in a long task, followed on its page (Docker's
    `--pull missing`). The audit entry is written when the task ends."""
    from dashboard.live import tasks_api

    tid = tasks_api.start(
        request.user, "container.run", "long.container_run",
        {"opts": opts.to_dict(), "start": start, "address": request.META.get("REMOTE_ADDR", "")},
        target=opts.name or opts.image,
    )  # fmt: skip
    url = reverse("live:task", args=[tid])
    if request.htmx:
        resp = HttpResponse(status=204)
        resp["HX-Redirect"] = url
        return resp
    return redirect(url)


def _tab_context(request, ref: str, tab: str) -> dict:
    user = request.user
    c = svc.get(user, ref)
    ctx: dict = {"c": c, "row": svc.row_of(c), "tab": tab, "tabs": TABS}
    ctx["can_act"] = has_role(user, "operator")
    if tab in ("summary", "inspect", "mounts", "networks"):
        info = svc.inspect(user, c.id)
        ctx["info"] = info
        ctx["inspect_json"] = json.dumps(info, indent=2)
        ctx["mounts"] = info.get("Mounts") or []
        ctx["networks"] = (info.get("NetworkSettings") or {}).get("Networks") or {}
    if tab == "top":
        try:
            ctx["top"] = svc.top(user, c.id)
        except svc.EngineError as e:
            ctx["top_error"] = str(e)
    return ctx


@role_required("viewer")
def detail(request, ref: str, tab: str = "summary"):
    if tab not in TABS:
        raise Http404(f"no tab {tab!r}")
    if tab in OPERATOR_TABS and not has_role(request.user, "operator"):
        from django.core.exceptions import PermissionDenied

        raise PermissionDenied("the terminal needs the operator role")
    try:
        ctx = _tab_context(request, ref, tab)
    except svc.NotFound as e:
        raise Http404(str(e)) from None
    fragment = request.GET.get("fragment") if request.htmx else None
    if fragment == "tab":
        return render(request, f"containers/tab_{tab}.html", ctx)
    if fragment == "header":  # the live state line (detail.js asks on each event)
        return render(request, "containers/_header.html", ctx)
    return render(request, "containers/detail.html", ctx)


@require_POST
@role_required("operator")
def action(request, ref: str, action: str):
    if action not in svc.ACTIONS:
        return HttpResponseBadRequest(f"unknown action {action!r}: use one of {svc.ACTIONS}")
    timeout = None
    if request.POST.get("timeout", "").strip():
        try:
            timeout = float(request.POST["timeout"])
            if timeout < 0:
                raise ValueError
        except ValueError:
            return HttpResponseBadRequest(
                f"timeout {request.POST['timeout']!r}: a number of seconds >= 0"
            )
    try:
        c = svc.get(request.user, ref)
    except svc.NotFound as e:
        raise Http404(str(e)) from None
    if action == "stop":
        # A stop waits up to its timeout for the process: a quick-queue task, so the
        # page answers at once and the list shows the change when it happens.
        from dashboard.live import tasks_api

        tasks_api.start(
            request.user, "container.stop", "containers.stop",
            {"ref": c.id, "timeout": timeout, "address": request.META.get("REMOTE_ADDR", "")},
            target=c.name,
        )  # fmt: skip
        if not request.htmx:
            messages.info(request, f"Stopping {c.name}…")
        return _done(request, reverse("containers:detail", args=[c.name]))
    signal = request.POST.get("signal", "")
    params = {k: v for k, v in (("timeout", timeout), ("signal", signal)) if v}
    try:
        svc.act(request.user, c.id, action, timeout=timeout, signal=signal)
    except svc.EngineError as e:
        record(request, f"container.{action}", target=c.name, params=params, result=str(e))
        if request.htmx:  # the page stays: the error goes back to it at once
            return HttpResponse(f"{action} {c.name}: {e}", status=409)
        messages.error(request, f"{action} {c.name}: {e}")
    else:
        record(request, f"container.{action}", target=c.name, params=params)
        if not request.htmx:
            messages.info(request, f"{action}: {c.name} done.")
    if action == "remove":
        return _done(request, reverse("containers:list"), leave=True)
    return _done(request, reverse("containers:detail", args=[c.name]))


@role_required("viewer")
def logs_download(request, ref: str):
    stream = request.GET.get("stream", "both")
    streams = ("stdout", "stderr") if stream not in ("stdout", "stderr") else (stream,)
    try:
        c = svc.get(request.user, ref)
        lines = logsvc.download_lines(
            request.user, c.id, timestamps=request.GET.get("timestamps", "1") != "0",
            streams=streams,
        )  # fmt: skip
    except svc.NotFound as e:
        raise Http404(str(e)) from None
    resp = StreamingHttpResponse(lines, content_type="text/plain; charset=utf-8")
    resp["Content-Disposition"] = f'attachment; filename="{c.name}.log"'
    return resp
