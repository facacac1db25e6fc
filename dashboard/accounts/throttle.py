"""Login throttling: too many failed log-ins lock the username, or the client address,
for a while.

Per username: MAX_USER failures within WINDOW lock that account's log-in for LOCK,
whatever the password (a correct password during the lock is refused too, or the
lock would only slow a guesser down). Per address: a higher limit, because many
people may share one address (everyone behind a proxy, or on 127.0.0.1 here).
Counts live in the database (LoginFailures) so every web process sees them.
"""

from __future__ import annotations

import math
import unicodedata
from datetime import timedelta

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

MAX_USER = 5
MAX_ADDR = 20
WINDOW = timedelta(minutes=15)
LOCK = timedelta(minutes=15)


def user_key(username: str) -> str:
    """The account a log-in names, as Django's log-in form finds it (NFKC, stripped),
    case-folded: every spelling that reaches one account shares one count and lock
    ("ｖｉｅｗｅｒ" in full-width letters logs in as "viewer")."""
    return unicodedata.normalize("NFKC", username).strip().casefold()[:255]


def _keys(username: str, address: str) -> list[tuple[str, str, int]]:
    keys = []
    if user_key(username):
        keys.append(("user", user_key(username), MAX_USER))
    if address:
        keys.append(("addr", address[:255], MAX_ADDR))
    return keys


def locked_for(username: str, address: str) -> int:
    """Seconds until log-in is allowed again for this username/address (0: allowed now)."""
    from dashboard.accounts.models import LoginFailures

    now = timezone.now()
    wait = 0.0
    for kind, key, _limit in _keys(username, address):
        row = LoginFailures.objects.filter(kind=kind, key=key, locked_until__gt=now).first()
        if row is not None:
            wait = max(wait, (row.locked_until - now).total_seconds())
    return math.ceil(wait)


def failed(username: str, address: str) -> int:
    """Count a failure; returns the lock's seconds if this failure started one, else 0."""
    from dashboard.accounts.models import LoginFailures

    now = timezone.now()
    # Rows of guesses long past are of no use: without this, a guesser trying many
    # usernames would grow the table for ever.
    LoginFailures.objects.filter(first_at__lt=now - WINDOW - LOCK).filter(
        models.Q(locked_until__isnull=True) | models.Q(locked_until__lt=now)
    ).delete()
    started = 0
    for kind, key, limit in _keys(username, address):
        with transaction.atomic():
            row, _ = LoginFailures.objects.select_for_update().get_or_create(
                kind=kind, key=key, defaults={"first_at": now}
            )
            if now - row.first_at > WINDOW or (row.locked_until and row.locked_until <= now):
                # The window (or an earlier lock) is over: start counting afresh.
                row.count, row.first_at, row.locked_until = 0, now, None
                row.save()
            LoginFailures.objects.filter(pk=row.pk).update(count=F("count") + 1)
            row.refresh_from_db()
            if row.count >= limit and row.locked_until is None:
                row.locked_until = now + LOCK
                row.save(update_fields=["locked_until"])
                started = int(LOCK.total_seconds())
    return started


def succeeded(username: str) -> None:
    """A good log-in clears the username's count (not the address's: one good account
    must not reset the count of someone guessing others from the same address)."""
    from dashboard.accounts.models import LoginFailures

    LoginFailures.objects.filter(kind="user", key=user_key(username)).delete()


def unlock(username: str) -> None:
    """An admin lifts a user's lock (users page)."""
    succeeded(username)


def human_wait(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
