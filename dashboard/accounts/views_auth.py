"""Log in (throttled), log out, change password."""

from __future__ import annotations

import unicodedata

from django.contrib import messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.contrib.auth.decorators import login_not_required, login_required
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from dashboard.accounts import throttle
from dashboard.accounts.audit import client_address, record
from dashboard.resources.htmx import invalid_status, page

SESSION_MAX_AGE = 12 * 3600  # seconds
LOGIN_PATH = "/login/"
UNKNOWN_USER = "(unknown user)"


def _account_named(username: str) -> str:
    """The account a failed log-in was for, or UNKNOWN_USER: what names no account is
    often a password typed into the wrong field, and every viewer reads the audit log."""
    from django.contrib.auth import get_user_model

    name = unicodedata.normalize("NFKC", username).strip()
    found = get_user_model().objects.filter(username__iexact=name).values_list("username")
    return next((n for (n,) in found[:1]), UNKNOWN_USER)


def _next_url(request) -> str:
    nxt = request.POST.get("next") or request.GET.get("next") or ""
    ok = url_has_allowed_host_and_scheme(
        nxt, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    # Never back to the log-in page itself: a logged-in user would go round in circles.
    return nxt if nxt and ok and not nxt.startswith(LOGIN_PATH) else "/"


# login_not_required: ready for Django's LoginRequiredMiddleware (every other page
# then needs a log-in even if its view forgot the decorator).
@login_not_required
@sensitive_post_parameters("password")
@csrf_protect
@never_cache
def login_view(request):
    if request.user.is_authenticated and request.method == "GET":
        return redirect(_next_url(request))
    form = AuthenticationForm(request, data=request.POST or None)
    locked = False
    if request.method == "POST":
        username = request.POST.get("username", "")
        addr = client_address(request)
        wait = throttle.locked_for(username, addr)
        if wait:
            locked = True
            form.is_valid()  # bound form: fields keep their values
            form.errors.clear()
            form.add_error(
                None,
                f"Too many failed log-ins: log-in is locked for "
                f"{throttle.human_wait(wait)}. Try again later or ask an admin.",
            )
            record(request, "auth.login", _account_named(username), result="refused: locked",
                   user=None)  # fmt: skip
        elif form.is_valid():
            user = form.get_user()
            login(request, user)  # rotates the session key (no session fixation)
            # A log-in lasts a working day at most, whatever SESSION_COOKIE_AGE says
            # (two weeks by default: too long for the keys to a shared host).
            request.session.set_expiry(SESSION_MAX_AGE)
            throttle.succeeded(user.username)
            record(request, "auth.login", user.username, user=user)
            return redirect(_next_url(request))
        else:
            started = throttle.failed(username, addr)
            result = "failed: bad credentials" + (" (now locked)" if started else "")
            record(request, "auth.login", _account_named(username), result=result, user=None)
            if started:
                locked = True
                form.errors.clear()
                form.add_error(
                    None,
                    "Too many failed log-ins: log-in is locked for "
                    f"{throttle.human_wait(started)}.",
                )
    status = 200 if request.method == "GET" else (429 if locked else 400)
    nxt = request.POST.get("next") or request.GET.get("next", "")
    return render(request, "login.html", {"form": form, "next": nxt}, status=status)


@require_POST
def logout_view(request):
    if request.user.is_authenticated:
        record(request, "auth.logout", request.user.username)
    logout(request)  # flushes the session
    return redirect("login")


@sensitive_post_parameters("old_password", "new_password1", "new_password2")
@login_required
def password_change(request):
    form = PasswordChangeForm(request.user, data=request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            user = form.save()
            # Keeps this session (the hash changed) and rotates its key; the user's
            # other sessions end, which is what a password change is often for.
            update_session_auth_hash(request, user)
            record(request, "auth.password_change", user.username)
            messages.success(request, "Your password was changed.")
            return redirect("accounts_password")
        record(request, "auth.password_change", request.user.username, result="refused: invalid")
        return page(request, "accounts/password.html", {"form": form}, invalid_status(request))
    return page(request, "accounts/password.html", {"form": form})
