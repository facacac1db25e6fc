"""Overview page. The full dashboard arrives with issue 5; this shows the engine's info."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from dashboard.core import services


@login_required
def overview(request):
    return render(request, "overview.html", {"info": services.engine_info()})
