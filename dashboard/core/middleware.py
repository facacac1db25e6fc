"""htmx and the login redirect.

When a session expires, an htmx request gets the 302 to the login page like any
other; htmx would follow it inside the request and swap the whole login page into
the fragment's target. The page must go to the login page instead: HX-Redirect.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse


class HtmxLoginRedirectMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.headers.get("HX-Request") == "true"
            and response.status_code in (301, 302)
            and response.get("Location", "").startswith(str(settings.LOGIN_URL))
        ):
            out = HttpResponse(status=204)
            out["HX-Redirect"] = response["Location"]
            return out
        return response
