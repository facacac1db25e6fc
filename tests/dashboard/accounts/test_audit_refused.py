"""Failures are on the record too: a change refused because of bad input is audited
with who, from where, the target, what was asked (masked) and the errors. (Networks:
tests/dashboard/resources/test_networks.py, in a network namespace of the test's own.)"""

from __future__ import annotations

import pytest

from dashboard.accounts.models import AuditEntry, Team

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "role, url, data, action, target, error",
    [
        ("admin", "/users/create/", {"username": "has space", "role": "viewer"},
         "user.create", "has space", "no spaces"),
        ("admin", "/users/{viewer}/grant/", {"role": "root"}, "user.grant", "viewer", "role"),
        ("admin", "/teams/create/", {"name": "", "role": "admin"}, "team.create", "",
         "name"),
        ("admin", "/teams/{team}/grant/", {"role": "god"}, "team.grant", "ops", "role"),
        ("admin", "/teams/{team}/member/", {"op": "add", "username": "ghost"},
         "team.add_member", "ops", "no user named"),
        ("operator", "/volumes/create/", {"name": "bad name!", "labels": "token=s3"},
         "volume.create", "bad name!", "a volume name is"),
    ],
)  # fmt: skip
def test_refused_input_is_audited(
    client_as, users, engine_root, role, url, data, action, target, error
):
    team = Team.objects.create(name="ops")
    url = url.format(viewer=users["viewer"].pk, team=team.pk)
    client_as(role).post(url, data, REMOTE_ADDR="192.0.2.5")
    e = AuditEntry.objects.get(action=action)
    assert e.actor == role and e.address == "192.0.2.5" and e.target == target
    assert e.result.startswith("refused: ") and error in e.result, e.result
    assert "s3" not in str(e.params) and "csrfmiddlewaretoken" not in e.params
