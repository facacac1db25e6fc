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


class LoginFailures(models.Model):
    """Failed log-ins counted per username and per client address (kind "user"/"addr").

    Kept in the database, not a per-process cache: the web server may run several
    processes, and a lock must hold in all of them and across restarts.
    """

    kind = models.CharField(max_length=8)
    key = models.CharField(max_length=255)
    count = models.PositiveIntegerField(default=0)
    first_at = models.DateTimeField()  # start of the counting window
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "key"], name="login_failures_key")]


class EventCursor(models.Model):
    """How far the audit log has imported an engine's events log (by the engine's ID)."""

    engine_id = models.CharField(max_length=64, unique=True)
    seq = models.BigIntegerField(default=0)
