"""The topology pages: the live diagram, its JSON, node details, "can A reach B?",
and a container's anatomy. All read-only; a viewer sees everything, the actions a
node offers (stop, terminal) appear from the operator role up and are carried
out by the containers pages, which check the role again."""

from __future__ import annotations

import json

from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.accounts.roles import has_role, role_required
from dashboard.services import topology as svc


def _json(request) -> bool:
    return request.GET.get("format") == "json" or "application/json" in request.headers.get(
        "Accept", ""
    )


@require_GET
@role_required("viewer")
def page(request):
    g = svc.graph(request.user)
    return render(
        request,
        "topology/page.html",
        {
            # The first drawing comes with the page; the websocket keeps it current.
            "graph": g,
            "networks": svc.networks(g),
            "can_act": has_role(request.user, "operator"),
        },
    )


@require_GET
@role_required("viewer")
def graph_json(request):
    """The same graph the page draws, for scripts: {"nodes": [...], "edges": [...]}."""
    return JsonResponse(svc.graph(request.user), json_dumps_params={"indent": 1})


@require_GET
@role_required("viewer")
def node(request, node_id: str):
    g = svc.graph(request.user)
    try:
        n = svc.node(g, node_id)
    except svc.NotFound as e:
        raise Http404(str(e)) from None
    edges = svc.edges_of(g, node_id)
    if _json(request):
        return JsonResponse({"node": n, "edges": edges})
    return render(
        request,
        "topology/_node.html",
        {"n": n, "edges": edges, "can_act": has_role(request.user, "operator")},
    )


@require_GET
@role_required("viewer")
def reach(request):
    """ "Can A reach B?" — the doctor runs probes inside A's namespace: it changes nothing."""
    source, target = request.GET.get("source", ""), request.GET.get("target", "")
    try:
        result = svc.reach(request.user, source, target)
    except svc.EngineError as e:
        if _json(request):
            return JsonResponse({"error": str(e)}, status=400)
        # 200 for htmx: it swaps only successful responses, and the error is the answer.
        return render(request, "topology/_reach.html", {"error": str(e)})
    if _json(request):
        return JsonResponse(result)
    return render(
        request,
        "topology/_reach.html",
        {
            "r": result,
            "r_json": json.dumps(
                {"path": result["path"], "break_at": result.get("break_at", ""), "ok": result["ok"]}
            ),
        },
    )


@require_GET
@role_required("viewer")
def anatomy(request, ref: str):
    try:
        a = svc.anatomy(request.user, ref)
    except svc.NotFound as e:
        raise Http404(str(e)) from None
    except svc.EngineError as e:
        return render(request, "topology/anatomy.html", {"ref": ref, "error": str(e)}, status=409)
    if _json(request):
        return JsonResponse(a)
    return render(
        request,
        "topology/anatomy.html",
        {
            "ref": ref,
            "a": a,
            "procs": process_tree(a.get("Processes") or []),
            "can_act": has_role(request.user, "operator"),
        },
    )


def process_tree(procs: list[dict]) -> list[dict]:
    """Processes in tree order, each with its depth (children under their parent)."""
    pids = {p["Pid"] for p in procs}
    kids: dict[int, list[dict]] = {}
    for p in procs:
        kids.setdefault(p["PPid"] if p["PPid"] in pids else 0, []).append(p)
    out: list[dict] = []

    def walk(parent: int, depth: int) -> None:
        for p in sorted(kids.get(parent, []), key=lambda x: x["Pid"]):
            out.append({**p, "depth": depth, "indent": "  " * depth + ("└ " if depth else "")})
            walk(p["Pid"], depth + 1)

    walk(0, 0)
    return out
