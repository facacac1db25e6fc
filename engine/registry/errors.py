"""Registry errors: each names the registry or repository and says what to do
when there is something to do (log in, mark the registry insecure)."""

from __future__ import annotations

from engine.errors import EngineError


class RegistryError(EngineError):
    """The registry answered with an error, or not in the protocol's shape."""


class Unauthorized(RegistryError):
    """Credentials missing, wrong, or a token the registry does not accept."""


class Unreachable(RegistryError):
    """No connection to the registry (or its token server) could be made."""
