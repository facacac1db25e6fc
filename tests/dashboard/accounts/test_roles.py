"""Roles: direct grants, grants through teams, the highest wins, inactive users have none."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from dashboard.accounts.models import Grant, Team
from dashboard.accounts.roles import has_role, role_of

pytestmark = pytest.mark.django_db


def fresh(u: User) -> User:
    return User.objects.get(pk=u.pk)  # role_of caches on the object


def test_no_grant_no_role():
    u = User.objects.create_user("nobody", password="x")
    assert role_of(u) is None and not has_role(u, "viewer")


def test_standing_users(users):
    assert [role_of(users[r]) for r in ("admin", "operator", "viewer")] == [
        "admin",
        "operator",
        "viewer",
    ]
    assert has_role(users["operator"], "viewer") and not has_role(users["operator"], "admin")


def test_grant_through_a_team():
    u = User.objects.create_user("teamed", password="x")
    t = Team.objects.create(name="ops")
    Grant.objects.create(team=t, role="operator")
    assert role_of(u) is None
    t.members.add(u)
    assert role_of(fresh(u)) == "operator"
    t.members.remove(u)
    assert role_of(fresh(u)) is None


def test_highest_grant_wins(users):
    v = users["viewer"]  # direct viewer
    low, high = Team.objects.create(name="low"), Team.objects.create(name="high")
    Grant.objects.create(team=low, role="viewer")
    Grant.objects.create(team=high, role="admin")
    low.members.add(v)
    assert role_of(fresh(v)) == "viewer"
    high.members.add(v)
    assert role_of(fresh(v)) == "admin"
    # ...and a direct grant higher than the teams' wins too.
    o = users["operator"]
    low.members.add(o)
    assert role_of(fresh(o)) == "operator"


def test_inactive_user_has_no_role(users):
    a = users["admin"]
    a.is_active = False
    a.save()
    assert role_of(fresh(a)) is None and not has_role(fresh(a), "viewer")


def test_superuser_is_admin():
    su = User.objects.create_superuser("root", password="x")
    assert role_of(su) == "admin"


def test_user_without_role_gets_403_on_pages(engine_root, db):
    from django.test import Client

    u = User.objects.create_user("norole", password="x")
    c = Client()
    c.force_login(u)
    for url in ("/", "/volumes/", "/networks/", "/system/", "/audit/"):
        assert c.get(url).status_code == 403, url


def test_every_post_needs_the_csrf_token(users, engine_root):
    """With Django's CSRF checks on (the test client skips them by default), every
    state-changing URL of these apps refuses a POST without the token, even an admin's."""
    from django.test import Client

    c = Client(enforce_csrf_checks=True)
    c.force_login(users["admin"])
    uid, t = users["viewer"].pk, Team.objects.create(name="t")
    posts = [
        "/logout/", "/password/", "/users/create/", f"/users/{uid}/password/",
        f"/users/{uid}/active/", f"/users/{uid}/grant/", f"/users/{uid}/revoke/",
        "/teams/create/", f"/teams/{t.pk}/delete/", f"/teams/{t.pk}/grant/",
        f"/teams/{t.pk}/revoke/", f"/teams/{t.pk}/member/", "/volumes/create/",
        "/volumes/prune/", "/volumes/v/remove/", "/networks/create/",
        "/networks/n/connect/", "/networks/n/disconnect/", "/networks/n/remove/",
        "/system/prune/",
    ]  # fmt: skip
    for url in posts:
        assert c.post(url, {"role": "viewer", "name": "x"}).status_code == 403, url
    assert (
        Client(enforce_csrf_checks=True).post("/login/", {"username": "admin"}).status_code == 403
    )
    assert Team.objects.filter(pk=t.pk).exists() and role_of(users["viewer"]) == "viewer"


def _routes(module: str) -> list[str]:
    """Every URL of a urls.py, with sample values for its parameters."""
    import importlib

    out = []
    for p in importlib.import_module(module).urlpatterns:
        route = str(p.pattern)
        for conv in ("<int:uid>", "<int:tid>"):
            route = route.replace(conv, "1")
        for conv in ("<str:name>", "<str:ref>"):
            route = route.replace(conv, "x")
        out.append("/" + route)
    return out


SELF_SERVICE = {"/login/", "/logout/", "/password/"}


@pytest.mark.parametrize("module", ["dashboard.accounts.urls", "dashboard.resources.urls"])
def test_no_route_lets_a_viewer_change_anything(users, engine_root, module):
    """Whatever is added to these urls.py later: a viewer's POST is refused everywhere
    (403, or 405 from a read-only page) but on its own session and password; an
    operator's on every accounts page and on system prune."""
    from django.test import Client

    from dashboard.services import engine_for

    Team.objects.create(pk=1, name="t")
    data = {"role": "admin", "name": "x", "username": "viewer", "container": "x"}
    for role in ("viewer", "operator"):
        c = Client()
        c.force_login(users[role])
        for url in _routes(module):
            if url in SELF_SERVICE:
                continue
            if role == "viewer" or "accounts" in module or url.startswith("/system/prune"):
                code = c.post(url, data).status_code
                assert code in (403, 405), (role, url, code)
        if role == "viewer":
            assert engine_for(None).list_volumes() == []
    assert role_of(User.objects.get(pk=users["viewer"].pk)) == "viewer"
    assert not User.objects.filter(username="x").exists() and Team.objects.count() == 1


@pytest.mark.django_db(transaction=True)  # database_sync_to_async: another thread
def test_ws_role_reads_the_user_afresh(users):
    """A websocket's scope keeps one user object for the socket's life: a consumer that
    checks again (on receive) must see a demotion or deactivation made since connect."""
    from asgiref.sync import async_to_sync

    from dashboard.accounts.roles import ws_role

    op = users["operator"]
    scope = {"user": op}
    assert async_to_sync(ws_role)(scope, "operator")
    Grant.objects.filter(user=op).update(role="viewer")
    assert not async_to_sync(ws_role)(scope, "operator")
    assert async_to_sync(ws_role)(scope, "viewer")
    User.objects.filter(pk=op.pk).update(is_active=False)
    assert not async_to_sync(ws_role)(scope, "viewer")


def test_forced_changes_below_the_role_are_on_the_record(client_as, users, engine_root):
    """A viewer forcing a change's URL gets 403, and the attempt is audited (who, from
    where, what); merely opening a page one may not see is not."""
    from dashboard.accounts.models import AuditEntry

    v = client_as("viewer")
    assert v.post("/volumes/create/", {"name": "x"}, REMOTE_ADDR="192.0.2.4").status_code == 403
    assert client_as("operator").post("/users/create/", {"username": "m"}).status_code == 403
    assert v.get("/users/").status_code == 403
    got = list(AuditEntry.objects.order_by("id").values_list("actor", "action", "target"))
    assert got == [
        ("viewer", "access.denied", "/volumes/create/"),
        ("operator", "access.denied", "/users/create/"),
    ]
    e = AuditEntry.objects.order_by("id").first()
    assert e.address == "192.0.2.4" and e.result == "refused: needs the operator role"
    assert e.params == {"method": "POST", "needs": "operator", "has": "viewer"}
