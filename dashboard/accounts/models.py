"""Teams, role grants and the audit log.

A user's role is the highest of: a grant to the user, a grant to any team the user
is in (superusers are admins). Roles are ordered viewer < operator < admin.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

ROLE_CHOICES = [("viewer", "viewer"), ("operator", "operator"), ("admin", "admin")]


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="berth_teams", blank=True
    )

    def __str__(self) -> str:
        return self.name


class Grant(models.Model):
    """A role for exactly one of a user or a team."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="berth_grants",
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="grants"
    )
    role = models.CharField(max_length=16, choices=ROLE_CHOICES)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=False, team__isnull=True)
                    | models.Q(user__isnull=True, team__isnull=False)
                ),
                name="grant_user_xor_team",
            )
        ]


class AuditEntry(models.Model):
    """One state-changing action, from the dashboard or (via the engine's events) the CLI."""

    ts = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=150, db_index=True)  # username, or "uid:0" for the CLI
    source = models.CharField(max_length=16, default="web")  # web | cli | engine
    address = models.CharField(max_length=64, blank=True, default="")
    action = models.CharField(max_length=64, db_index=True)  # e.g. container.stop
    target = models.CharField(max_length=255, blank=True, default="", db_index=True)
    params = models.JSONField(default=dict, blank=True)  # secrets masked before saving
    result = models.CharField(max_length=255, blank=True, default="ok")
    host_changes = models.JSONField(default=list, blank=True)  # links, rules, ports
    # The engine event's sequence number, for entries imported from the events log
    # (unique: importing twice cannot duplicate).
    event_seq = models.BigIntegerField(null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-ts", "-id"]
