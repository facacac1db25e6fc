"""No change on the users and teams pages may leave the dashboard without an active
admin: whether the last admin's role is direct or comes through a team, demoting,
revoking, deleting the team or leaving it is refused (and audited), and nothing changes.
With another admin left, the same changes go through."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from dashboard.accounts.models import AuditEntry, Grant, Team
from dashboard.accounts.roles import role_of

pytestmark = pytest.mark.django_db

REFUSED = "no active admin would remain"


def role(u: User) -> str | None:
    return role_of(User.objects.get(pk=u.pk))  # role_of caches on the object


def test_sole_admin_cannot_demote_self(client_as, users):
    a = users["admin"]
    r = client_as("admin").post(f"/users/{a.pk}/grant/", {"role": "viewer"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and REFUSED in r.content.decode()
    assert role(a) == "admin"
    e = AuditEntry.objects.get(action="user.grant")
    assert e.target == "admin" and e.result.startswith("refused") and REFUSED in e.result


def test_admin_may_demote_self_when_another_admin_remains(client_as, users):
    other = User.objects.create_user("admin2", password="x")
    Grant.objects.create(user=other, role="admin")
    a = users["admin"]
    client_as("admin").post(f"/users/{a.pk}/grant/", {"role": "viewer"})
    assert role(a) == "viewer"


@pytest.fixture
def team_admin(users):
    """The only admin holds the role through team "root" (its direct grant removed)."""
    a = users["admin"]
    Grant.objects.filter(user=a).delete()
    t = Team.objects.create(name="root")
    Grant.objects.create(team=t, role="admin")
    t.members.add(a)
    assert role(a) == "admin"
    return a, t


@pytest.mark.parametrize(
    "path, data, action",
    [
        ("revoke", {}, "team.revoke"),
        ("grant", {"role": "operator"}, "team.grant"),
        ("delete", {}, "team.delete"),
        ("member", {"op": "remove", "username": "admin"}, "team.remove_member"),
    ],
)
def test_last_admin_through_a_team_is_kept(client_as, team_admin, path, data, action):
    a, t = team_admin
    r = client_as("admin").post(f"/teams/{t.pk}/{path}/", data, HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and REFUSED in r.content.decode()
    assert role(a) == "admin"
    assert Team.objects.filter(pk=t.pk, members=a, grants__role="admin").exists()
    e = AuditEntry.objects.get(action=action)
    assert e.target == "root" and e.result.startswith("refused")


def test_team_changes_go_through_with_another_admin(client_as, team_admin, users):
    a, t = team_admin
    Grant.objects.create(user=users["operator"], role="admin")
    c = client_as("admin")
    c.post(f"/teams/{t.pk}/member/", {"op": "remove", "username": "admin"})
    assert role(a) is None


def test_an_inactive_superuser_is_no_admin(client_as, users):
    User.objects.create_superuser("root", password="x", is_active=False)
    a = users["admin"]
    client_as("admin").post(f"/users/{a.pk}/grant/", {"role": "operator"})
    assert role(a) == "admin"
