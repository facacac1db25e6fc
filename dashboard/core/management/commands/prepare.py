"""`manage.py prepare`: what the web service does before it serves (docker-compose.yml).

The same steps `python -m dashboard.serve` takes on start: a persistent secret key
(0600, under the engine root), the database schema, the static files, and the first
admin account, whose one-time password is printed once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Secret key, migrations, static files and the first admin account."

    def handle(self, *args: Any, **options: Any) -> None:
        from dashboard.core.management.commands.ensure_admin import ensure_admin
        from dashboard.serve import ensure_secret_key

        ensure_secret_key(settings.SECRET_KEY_FILE)
        db = settings.DATABASES["default"]
        if db["ENGINE"].endswith("sqlite3"):
            Path(db["NAME"]).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        password = ensure_admin("admin")
        if password:
            self.stdout.write(f"created admin account 'admin'; one-time password: {password}")
        else:
            self.stdout.write("an admin account exists (its password was shown on first start)")
