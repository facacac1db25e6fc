"""`manage.py ensure_admin`: make the first admin account, once.

On a fresh database it creates a superuser with a random password and prints it;
that is the only time the password is shown (only its hash is stored). Later runs
only say that an admin exists.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction


def ensure_admin(username: str = "admin") -> str | None:
    """Create superuser `username` unless any superuser exists.

    Returns the new account's one-time password, or None when an admin was already there.
    """
    User = get_user_model()
    with transaction.atomic():
        if User.objects.filter(is_superuser=True).exists():
            return None
        password = secrets.token_urlsafe(16)
        User.objects.create_superuser(username=username, email="", password=password)
    return password


class Command(BaseCommand):
    help = "Create the first admin account and print its one-time password."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        password = ensure_admin(username)
        if password is None:
            self.stdout.write("An admin account exists; no password to show.")
        else:
            self.stdout.write(f"Created admin account {username!r}; one-time password: {password}")
