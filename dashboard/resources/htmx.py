"""A full page on navigation, only the page's content for htmx requests.

Page templates start with ``{% extends base_template %}``: "base.html" (layout, nav)
for a normal request, "resources/fragment.html" (messages + content) for htmx, so one
template serves both. Forms post with ``hx-target="main"``: the answer replaces the
page's content, errors shown next to their fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpResponse
from django.shortcuts import redirect, render

FRAGMENT = "resources/fragment.html"


def is_htmx(request: Any) -> bool:
    return bool(getattr(request, "htmx", False))


def page(
    request: Any, template: str, context: dict | None = None, status: int = 200
) -> HttpResponse:
    ctx = dict(context or {})
    ctx["base_template"] = FRAGMENT if is_htmx(request) else "base.html"
    return render(request, template, ctx, status=status)


def invalid_status(request: Any, code: int = 400) -> int:
    """A form with errors or a refused change: ``code`` for a plain POST; 200 for htmx,
    which swaps in only 2xx answers by default, and the errors must show."""
    return 200 if is_htmx(request) else code


def after_change(
    request: Any, again: Callable[[Any], HttpResponse], to: str, *args: Any
) -> HttpResponse:
    """After a change (or a refusal told in a message): for htmx the page again,
    ``again(request)``, swapped in place with its messages; for a plain POST a redirect
    to it, so that reloading the page does not post again."""
    if is_htmx(request):
        return again(request)
    return redirect(to, *args)


def to_task(request: Any, task_id: str) -> HttpResponse:
    """Follow a started task on its page (dashboard/live): a redirect, or for htmx an
    HX-Redirect so the whole page changes."""
    from django.urls import reverse

    url = reverse("live:task", args=[task_id])
    if is_htmx(request):
        resp = HttpResponse(status=204)
        resp["HX-Redirect"] = url
        return resp
    return redirect(url)
