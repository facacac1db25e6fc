"""Users and teams (admins only): accounts with one-time passwords, deactivation,
role grants to users and teams, team membership. Every change is audited."""

from __future__ import annotations

import secrets
from contextlib import contextmanager

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST, require_safe

from dashboard.accounts import throttle
from dashboard.accounts.audit import record, record_invalid
from dashboard.accounts.forms import MemberForm, RoleForm, TeamForm, UserCreateForm
from dashboard.accounts.models import Grant, Team
from dashboard.accounts.roles import an_active_admin_exists, role_of, role_required
from dashboard.resources.htmx import after_change, invalid_status, page


def _one_time_password() -> str:
    return secrets.token_urlsafe(12)


def _users_page(request, form=None, created=None, status=200):
    User = get_user_model()
    rows = []
    for u in User.objects.order_by("username").prefetch_related("berth_grants", "berth_teams"):
        direct = next((g.role for g in u.berth_grants.all()), "")
        rows.append(
            {
                "user": u,
                "direct": direct,
                "teams": [t.name for t in u.berth_teams.all()],
                "effective": role_of(u) or "",
                "locked": throttle.locked_for(u.username, ""),
            }
        )
    ctx = {"rows": rows, "form": form or UserCreateForm(), "created": created,
           "role_form": RoleForm()}  # fmt: skip
    resp = page(request, "accounts/users.html", ctx, status)
    if created:  # a one-time password: kept by no browser or proxy cache
        add_never_cache_headers(resp)
    return resp


def _users_done(request):
    return after_change(request, _users_page, "accounts_users")


def _teams_done(request):
    return after_change(request, _teams_page, "accounts_teams")


NO_ADMIN_LEFT = "no active admin would remain"


class _NoAdminLeft(Exception):
    pass


@contextmanager
def _keeping_an_admin():
    """The change made inside is rolled back (and _NoAdminLeft raised) when no active
    admin remains after it: demoting, deactivating or removing the last admin, directly
    or through a team, would leave nobody able to manage users or undo it."""
    with transaction.atomic():
        yield
        if not an_active_admin_exists():
            raise _NoAdminLeft


def _refuse(request, action: str, target: str, why: str, params: dict | None = None):
    """A refused change: said on the page and on the record; the page again."""
    messages.error(request, f"{action} {target}: refused, {why}.")
    record(request, action, target, params, result=f"refused: {why}")
    return _teams_done(request) if action.startswith("team.") else _users_done(request)


@role_required("admin")
@require_safe
def users(request):
    return _users_page(request)


@role_required("admin")
@require_POST
def user_create(request):
    form = UserCreateForm(request.POST)
    if not form.is_valid():
        record_invalid(request, "user.create", request.POST.get("username", ""), form)
        return _users_page(request, form, status=invalid_status(request))
    name, role = form.cleaned_data["username"], form.cleaned_data["role"]
    password = _one_time_password()
    with transaction.atomic():
        u = get_user_model().objects.create_user(name, password=password)
        if role:
            Grant.objects.create(user=u, role=role)
    record(request, "user.create", name, {"role": role or "none"})
    # Shown once, on this answer only: only the hash is stored.
    return _users_page(request, created={"username": name, "password": password})


@role_required("admin")
@require_POST
def user_password(request, uid: int):
    u = get_object_or_404(get_user_model(), pk=uid)
    password = _one_time_password()
    u.set_password(password)
    u.save(update_fields=["password"])
    throttle.unlock(u.username)
    record(request, "user.reset_password", u.username)
    return _users_page(request, created={"username": u.username, "password": password})


@role_required("admin")
@require_POST
def user_active(request, uid: int):
    u = get_object_or_404(get_user_model(), pk=uid)
    active = request.POST.get("active") == "1"
    action = "user.activate" if active else "user.deactivate"
    if u.pk == request.user.pk and not active:
        messages.error(request, "You cannot deactivate your own account.")
        record(request, action, u.username, result="refused: own account")
        return _users_done(request)
    try:
        with _keeping_an_admin():
            u.is_active = active
            u.save(update_fields=["is_active"])
    except _NoAdminLeft:
        return _refuse(request, action, u.username, NO_ADMIN_LEFT)
    if not active:
        # The user's sessions end at once: Django refuses inactive users on each request,
        # and their rows go too so nothing lingers.
        _end_sessions(u)
    record(request, action, u.username)
    messages.success(request, f"{u.username} {'activated' if active else 'deactivated'}.")
    return _users_done(request)


def _end_sessions(user) -> None:
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    for s in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if str(s.get_decoded().get("_auth_user_id")) == str(user.pk):
            s.delete()


@role_required("admin")
@require_POST
def user_grant(request, uid: int):
    u = get_object_or_404(get_user_model(), pk=uid)
    form = RoleForm(request.POST)
    if not form.is_valid():
        record_invalid(request, "user.grant", u.username, form)
        messages.error(request, f"Grant to {u.username}: choose viewer, operator or admin.")
        return _users_done(request)
    role = form.cleaned_data["role"]
    try:
        with _keeping_an_admin():
            Grant.objects.filter(user=u).delete()  # one direct grant per user
            Grant.objects.create(user=u, role=role)
    except _NoAdminLeft:
        return _refuse(request, "user.grant", u.username, NO_ADMIN_LEFT, {"role": role})
    record(request, "user.grant", u.username, {"role": role})
    messages.success(request, f"{u.username} now has the {role} role directly.")
    return _users_done(request)


@role_required("admin")
@require_POST
def user_revoke(request, uid: int):
    u = get_object_or_404(get_user_model(), pk=uid)
    if u.pk == request.user.pk:
        messages.error(request, "You cannot revoke your own role.")
        record(request, "user.revoke", u.username, result="refused: own account")
        return _users_done(request)
    try:
        with _keeping_an_admin():
            n, _ = Grant.objects.filter(user=u).delete()
    except _NoAdminLeft:
        return _refuse(request, "user.revoke", u.username, NO_ADMIN_LEFT)
    record(request, "user.revoke", u.username, result="ok" if n else "no direct grant")
    messages.success(request, f"{u.username}'s direct role was revoked.")
    return _users_done(request)


# -- teams ---------------------------------------------------------------------------------


def _teams_page(request, form=None, member_errors=None, status=200):
    teams = Team.objects.order_by("name").prefetch_related("members", "grants")
    rows = [
        {"team": t, "role": next((g.role for g in t.grants.all()), ""),
         "members": sorted(m.username for m in t.members.all())}
        for t in teams
    ]  # fmt: skip
    ctx = {"rows": rows, "form": form or TeamForm(), "member_errors": member_errors or {},
           "role_form": RoleForm()}  # fmt: skip
    return page(request, "accounts/teams.html", ctx, status)


@role_required("admin")
@require_safe
def teams(request):
    return _teams_page(request)


@role_required("admin")
@require_POST
def team_create(request):
    form = TeamForm(request.POST)
    if not form.is_valid():
        record_invalid(request, "team.create", request.POST.get("name", ""), form)
        return _teams_page(request, form, status=invalid_status(request))
    name, role = form.cleaned_data["name"], form.cleaned_data["role"]
    with transaction.atomic():
        t = Team.objects.create(name=name)
        if role:
            Grant.objects.create(team=t, role=role)
    record(request, "team.create", name, {"role": role or "none"})
    messages.success(request, f"Team {name} created.")
    return _teams_done(request)


@role_required("admin")
@require_POST
def team_delete(request, tid: int):
    t = get_object_or_404(Team, pk=tid)
    name = t.name
    try:
        with _keeping_an_admin():
            t.delete()
    except _NoAdminLeft:
        return _refuse(request, "team.delete", name, NO_ADMIN_LEFT)
    record(request, "team.delete", name)
    messages.success(request, f"Team {name} deleted.")
    return _teams_done(request)


@role_required("admin")
@require_POST
def team_grant(request, tid: int):
    t = get_object_or_404(Team, pk=tid)
    form = RoleForm(request.POST)
    if not form.is_valid():
        record_invalid(request, "team.grant", t.name, form)
        messages.error(request, f"Grant to team {t.name}: choose viewer, operator or admin.")
        return _teams_done(request)
    role = form.cleaned_data["role"]
    try:
        with _keeping_an_admin():
            Grant.objects.filter(team=t).delete()
            Grant.objects.create(team=t, role=role)
    except _NoAdminLeft:
        return _refuse(request, "team.grant", t.name, NO_ADMIN_LEFT, {"role": role})
    record(request, "team.grant", t.name, {"role": role})
    messages.success(request, f"Team {t.name} now grants {role}.")
    return _teams_done(request)


@role_required("admin")
@require_POST
def team_revoke(request, tid: int):
    t = get_object_or_404(Team, pk=tid)
    try:
        with _keeping_an_admin():
            Grant.objects.filter(team=t).delete()
    except _NoAdminLeft:
        return _refuse(request, "team.revoke", t.name, NO_ADMIN_LEFT)
    record(request, "team.revoke", t.name)
    messages.success(request, f"Team {t.name} grants no role now.")
    return _teams_done(request)


@role_required("admin")
@require_POST
def team_member(request, tid: int):
    t = get_object_or_404(Team, pk=tid)
    form = MemberForm(request.POST)
    add = request.POST.get("op", "add") == "add"
    action = "team.add_member" if add else "team.remove_member"
    if not form.is_valid():
        record_invalid(request, action, t.name, form)
        errors = {t.pk: form.errors["username"][0]}
        return _teams_page(request, member_errors=errors, status=invalid_status(request))
    u = form.cleaned_data["username"]
    try:
        with _keeping_an_admin():
            if add:
                t.members.add(u)
            else:
                t.members.remove(u)
    except _NoAdminLeft:
        return _refuse(request, action, t.name, NO_ADMIN_LEFT, {"user": u.username})
    record(request, action, t.name, {"user": u.username})
    messages.success(request, f"{u.username} {'added to' if add else 'removed from'} {t.name}.")
    return _teams_done(request)
