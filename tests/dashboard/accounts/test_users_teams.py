"""Users and teams pages: admins only; one-time passwords; grants; membership; audit."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from dashboard.accounts.models import AuditEntry, Grant, Team
from dashboard.accounts.roles import role_of

pytestmark = pytest.mark.django_db

ADMIN_URLS = [
    ("get", "/users/"),
    ("get", "/teams/"),
    ("post", "/users/create/"),
    ("post", "/teams/create/"),
]


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_below_admin_refused(client_as, users, role):
    c = client_as(role)
    for method, url in ADMIN_URLS:
        r = getattr(c, method)(url, {"username": "mallory", "name": "evil", "role": "admin"})
        assert r.status_code == 403, (role, url)
    uid = users["viewer"].pk
    for url in (f"/users/{uid}/grant/", f"/users/{uid}/active/", f"/users/{uid}/password/"):
        assert c.post(url, {"role": "admin", "active": "0"}).status_code == 403
    assert not User.objects.filter(username="mallory").exists()
    assert role_of(User.objects.get(pk=uid)) == "viewer"
    assert User.objects.get(pk=uid).is_active


def test_admin_sees_users(client_as):
    r = client_as("admin").get("/users/")
    assert r.status_code == 200
    body = r.content.decode()
    for name in ("admin", "operator", "viewer"):
        assert name in body


def test_create_user_shows_one_time_password_that_works(client_as):
    r = client_as("admin").post("/users/create/", {"username": "newbie", "role": "operator"})
    assert r.status_code == 200
    m = re.search(r'id="onetime-password">([^<]+)<', r.content.decode())
    assert m, "the one-time password is shown"
    c = Client()
    assert c.login(username="newbie", password=m.group(1))
    assert role_of(User.objects.get(username="newbie")) == "operator"
    # ...only once: the users page does not show it again.
    assert m.group(1) not in client_as("admin").get("/users/").content.decode()
    e = AuditEntry.objects.get(action="user.create")
    assert e.actor == "admin" and e.target == "newbie" and m.group(1) not in str(e.params)


def test_create_user_errors_next_to_the_field(client_as):
    c = client_as("admin")
    r = c.post("/users/create/", {"username": "operator", "role": "viewer"})
    assert r.status_code == 400
    assert "a user named &#x27;operator&#x27; exists already" in r.content.decode()
    r = c.post("/users/create/", {"username": "has space", "role": "viewer"})
    assert r.status_code == 400 and "no spaces" in r.content.decode()


def test_deactivate_ends_access(client_as, users, engine_root):
    op = client_as("operator")
    assert op.get("/volumes/").status_code == 200
    r = client_as("admin").post(f"/users/{users['operator'].pk}/active/", {"active": "0"})
    assert r.status_code == 302
    assert not User.objects.get(pk=users["operator"].pk).is_active
    assert op.get("/volumes/").status_code == 302  # logged out
    assert AuditEntry.objects.filter(action="user.deactivate", target="operator").exists()
    client_as("admin").post(f"/users/{users['operator'].pk}/active/", {"active": "1"})
    assert User.objects.get(pk=users["operator"].pk).is_active


def test_admin_cannot_deactivate_self(client_as, users):
    c = client_as("admin")
    r = c.post(f"/users/{users['admin'].pk}/active/", {"active": "0"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 200  # htmx swaps it in: the message shows
    assert "You cannot deactivate your own account." in r.content.decode()
    assert User.objects.get(pk=users["admin"].pk).is_active


def test_grant_and_revoke_user_role(client_as, users):
    c = client_as("admin")
    uid = users["viewer"].pk
    c.post(f"/users/{uid}/grant/", {"role": "operator"})
    assert list(Grant.objects.filter(user_id=uid).values_list("role", flat=True)) == ["operator"]
    r = c.post(f"/users/{uid}/grant/", {"role": "superduper"})
    assert r.status_code == 302
    assert role_of(User.objects.get(pk=uid)) == "operator"
    c.post(f"/users/{uid}/revoke/")
    assert role_of(User.objects.get(pk=uid)) is None
    acts = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"user.grant", "user.revoke"} <= acts


def test_new_password_by_admin(client_as, users):
    r = client_as("admin").post(f"/users/{users['viewer'].pk}/password/")
    pw = re.search(r'id="onetime-password">([^<]+)<', r.content.decode()).group(1)
    assert Client().login(username="viewer", password=pw)


def test_teams_grant_membership_and_delete(client_as, users):
    c = client_as("admin")
    r = c.post("/teams/create/", {"name": "ops", "role": "admin"})
    assert r.status_code == 302
    t = Team.objects.get(name="ops")
    v = users["viewer"]
    c.post(f"/teams/{t.pk}/member/", {"op": "add", "username": "viewer"})
    assert role_of(User.objects.get(pk=v.pk)) == "admin"
    # The viewer, now admin through the team, can open the users page.
    vc = Client()
    vc.force_login(v)
    assert vc.get("/users/").status_code == 200
    c.post(f"/teams/{t.pk}/grant/", {"role": "operator"})
    assert role_of(User.objects.get(pk=v.pk)) == "operator"
    c.post(f"/teams/{t.pk}/member/", {"op": "remove", "username": "viewer"})
    assert role_of(User.objects.get(pk=v.pk)) == "viewer"
    r = c.post(f"/teams/{t.pk}/member/", {"op": "add", "username": "ghost"})
    assert r.status_code == 400 and "no user named &#x27;ghost&#x27;" in r.content.decode()
    c.post(f"/teams/{t.pk}/delete/")
    assert not Team.objects.filter(pk=t.pk).exists()
    acts = list(
        AuditEntry.objects.filter(action__startswith="team.").values_list("action", flat=True)
    )
    for a in ("team.create", "team.add_member", "team.grant", "team.remove_member", "team.delete"):
        assert a in acts
    assert c.post("/teams/create/", {"name": ""}).status_code == 400


def test_team_revoke(client_as, users):
    c = client_as("admin")
    c.post("/teams/create/", {"name": "ro", "role": "operator"})
    t = Team.objects.get(name="ro")
    t.members.add(users["viewer"])
    c.post(f"/teams/{t.pk}/revoke/")
    assert role_of(User.objects.get(pk=users["viewer"].pk)) == "viewer"


def test_one_time_passwords_are_never_cached(client_as, users):
    c = client_as("admin")
    for r in (
        c.post("/users/create/", {"username": "fresh", "role": "viewer"}),
        c.post(f"/users/{users['viewer'].pk}/password/"),
    ):
        assert "onetime-password" in r.content.decode()
        assert "no-store" in r.get("Cache-Control", ""), "kept by no browser or proxy cache"
