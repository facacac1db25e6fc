"""Networks pages: list, create (driver, subnet, gateway, internal), inspect,
connect/disconnect a container, remove. viewer: read; operator: change.
Every change is audited with the host changes it made (bridges, rules, veths)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.views.decorators.http import require_POST, require_safe

from dashboard.accounts.audit import record, record_invalid
from dashboard.accounts.roles import has_role, role_required
from dashboard.resources.forms import ConnectForm, NetworkForm, add_engine_error
from dashboard.resources.htmx import after_change, invalid_status, page
from dashboard.services import networks as svc


def _list_page(request, form=None, status=200):
    ctx = {
        "networks": svc.list_all(request.user),
        "form": form or NetworkForm(),
        "can_change": has_role(request.user, "operator"),
    }
    return page(request, "resources/networks.html", ctx, status)


def _detail_page(request, ref, form=None, status=200):
    try:
        net = svc.inspect(request.user, ref)
    except svc.EngineError as e:
        raise Http404(str(e)) from None
    ctx = {
        "net": net,
        "form": form or ConnectForm(),
        "containers": svc.containers(request.user),
        "can_change": has_role(request.user, "operator"),
    }
    return page(request, "resources/network_detail.html", ctx, status)


@role_required("viewer")
@require_safe
def networks(request):
    return _list_page(request)


@role_required("operator")
@require_POST
def network_create(request):
    form = NetworkForm(request.POST)
    if not form.is_valid():
        record_invalid(request, "network.create", request.POST.get("name", ""), form)
    else:
        d = dict(form.cleaned_data)  # a copy: add_error() drops fields from cleaned_data
        params = {k: d[k] for k in ("driver", "subnet", "gateway", "internal")}
        try:
            row, changes = svc.create(request.user, d["name"], d["driver"], d["subnet"],
                                      d["gateway"], d["internal"])  # fmt: skip
        except svc.EngineError as e:
            add_engine_error(form, e)
            record(request, "network.create", d["name"], params, result=f"error: {e}")
        else:
            record(request, "network.create", d["name"], params, host_changes=changes)
            messages.success(
                request, f"Network {row['name']} created ({row['subnet'] or 'no subnet'})."
            )
            return after_change(request, _list_page, "resources:networks")
    return _list_page(request, form, invalid_status(request))


@role_required("viewer")
@require_safe
def network_detail(request, ref: str):
    return _detail_page(request, ref)


@role_required("operator")
@require_POST
def network_remove(request, ref: str):
    try:
        changes = svc.remove(request.user, ref)
    except svc.EngineError as e:
        record(request, "network.remove", ref, result=f"error: {e}")
        messages.error(request, f"Cannot remove network {ref}: {e}")
        return _list_page(request, status=invalid_status(request, 409))
    record(request, "network.remove", ref, host_changes=changes)
    messages.success(request, f"Network {ref} removed.")
    return after_change(request, _list_page, "resources:networks")


def _link(request, ref: str, op: str):
    form = ConnectForm(request.POST)
    if not form.is_valid():
        record_invalid(request, f"network.{op}", ref, form)
    else:
        d = dict(form.cleaned_data)
        params = {"container": d["container"], "ip": d["ip"]} if op == "connect" else {
            "container": d["container"]}  # fmt: skip
        try:
            if op == "connect":
                changes = svc.connect(request.user, ref, d["container"], d["ip"])
            else:
                changes = svc.disconnect(request.user, ref, d["container"])
        except svc.EngineError as e:
            add_engine_error(form, e)
            record(request, f"network.{op}", ref, params, result=f"error: {e}")
        else:
            record(request, f"network.{op}", ref, params, host_changes=changes)
            word = "connected to" if op == "connect" else "disconnected from"
            messages.success(request, f"{d['container']} {word} {ref}.")
            return after_change(request, lambda r: _detail_page(r, ref), "resources:network", ref)
    return _detail_page(request, ref, form, invalid_status(request))


@role_required("operator")
@require_POST
def network_connect(request, ref: str):
    return _link(request, ref, "connect")


@role_required("operator")
@require_POST
def network_disconnect(request, ref: str):
    return _link(request, ref, "disconnect")
