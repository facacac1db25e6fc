"""Events feed and tasks pages: a snapshot rendered on the server, then a websocket that
resumes from the snapshot's position (static/live/*.js)."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import render

from dashboard.accounts.roles import role_required
from dashboard.live import tasks_api
from dashboard.live.models import STATE_CHOICES, TaskRecord
from dashboard.services import events as events_service

TASKS_SHOWN = 200


@role_required("viewer")
def events_page(request):
    types = events_service.parse_filter(request.GET.getlist("type"))
    actions = events_service.parse_filter(request.GET.getlist("action"))
    try:
        limit = int(request.GET.get("limit", "200"))
    except ValueError:
        limit = 200
    rows, top = events_service.recent(limit, types, actions)
    ctx = {
        "events": list(reversed(rows)),  # newest first, as the live rows are added
        "after": top,
        "types": ",".join(types),
        "actions": ",".join(actions),
        "all_types": events_service.TYPES,
    }
    template = "live/_event_rows.html" if request.htmx else "live/events.html"
    return render(request, template, ctx)


@role_required("viewer")
def tasks_page(request):
    tasks_api.reap_stale()
    qs = TaskRecord.objects.all()
    state = request.GET.get("state", "")
    if state:
        if state not in dict(STATE_CHOICES):
            return render(
                request, "live/tasks.html", {"error": f"unknown state {state!r}"}, status=400
            )
        qs = qs.filter(state=state)
    if kind := request.GET.get("kind", ""):
        qs = qs.filter(kind=kind)
    ctx = {"tasks": qs[:TASKS_SHOWN], "state": state, "kind": kind, "states": STATE_CHOICES}
    template = "live/_task_rows.html" if request.htmx else "live/tasks.html"
    return render(request, template, ctx)


@role_required("viewer")
def task_page(request, task_id: str):
    tasks_api.reap_stale()
    rec = TaskRecord.objects.filter(pk=task_id).first()
    if rec is None:
        raise Http404(f"no task {task_id}")
    entries = tasks_api.entries(task_id)
    last = entries[-1][0] if entries else ""
    ctx = {
        "task": rec,
        "entries": [{"sid": sid, "data": data} for sid, data in entries],
        "after": last,
    }
    return render(request, "live/task.html", ctx)
