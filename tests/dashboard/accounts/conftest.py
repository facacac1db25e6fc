"""A fast password hasher for these tests: Django's default (PBKDF2, a million rounds)
costs ~0.3 s per log-in on a shared 2-core machine, and these tests log in a lot.
What is tested (who may log in, locks, audit) does not depend on the hasher."""

import pytest


@pytest.fixture(autouse=True)
def _fast_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _own_engine_root(engine_root):
    """Every test here gets its own engine root: the audit page reads the engine's
    events, and must never read (or create) the host's /var/lib/berth."""
    return engine_root
