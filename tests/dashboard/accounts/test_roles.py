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
