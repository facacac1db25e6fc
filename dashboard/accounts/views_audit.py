"""The audit log page (filters, search, pages) and its CSV export.

Every role may read it (a viewer reads everything, changes nothing); secrets were
masked before they were stored. Both first import the engine's new events, so CLI
actions show up without waiting for the events relay.
"""

from __future__ import annotations

import csv

from django.core.paginator import Paginator
from django.http import HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_safe

from dashboard.accounts.audit import CSV_HEADER, FILTERS, csv_row, describe_change, filter_entries
from dashboard.accounts.models import AuditEntry
from dashboard.accounts.roles import role_required
from dashboard.resources.htmx import invalid_status, page
from dashboard.services import engine_for
from dashboard.services.accounts import import_engine_events

PER_PAGE = 100


def _import(request) -> str:
    try:
        import_engine_events(engine_for(request.user))
    except Exception as e:  # the page still shows what the log has
        return f"CLI actions could not be imported from the engine's events: {e}"
    return ""


@role_required("viewer")
@require_safe
def audit(request):
    warning = _import(request)
    qs, errors = filter_entries(AuditEntry.objects.all(), request.GET)
    pager = Paginator(qs, PER_PAGE)
    pg = pager.get_page(request.GET.get("page"))
    for e in pg:
        e.change_lines = [describe_change(c) for c in e.host_changes or []]
    args = request.GET.copy()
    args.pop("page", None)
    ctx = {
        "entries": pg,
        "errors": errors,
        "filters": {k: request.GET.get(k, "") for k in FILTERS},
        "query": args.urlencode(),
        "warning": warning,
    }
    return page(request, "accounts/audit.html", ctx, invalid_status(request) if errors else 200)


class _Echo:
    def write(self, value: str) -> str:
        return value


@role_required("viewer")
@require_safe
def audit_csv(request):
    _import(request)
    qs, errors = filter_entries(AuditEntry.objects.all(), request.GET)
    if errors:  # never the whole log in place of what was asked for
        text = "; ".join(f"{k}: {v}" for k, v in errors.items())
        return HttpResponse(text, status=400, content_type="text/plain; charset=utf-8")
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_HEADER)
        for e in qs.iterator(chunk_size=500):
            yield writer.writerow(csv_row(e))

    resp = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    resp["Content-Disposition"] = 'attachment; filename="berth-audit.csv"'
    return resp
