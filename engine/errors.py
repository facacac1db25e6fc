"""One error hierarchy for the whole engine.

Every error names the object it is about and the cause; the CLI maps them to
exit code 125 and prints ``str(err)`` on one line.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    def __init__(self, message: str, *, obj: str | None = None, errno: int | None = None):
        super().__init__(message)
        self.obj = obj
        self.errno = errno


class NotFound(EngineError):
    """The named object (container, image, volume, network...) does not exist."""


class Conflict(EngineError):
    """The object exists already, is in use, or a name is taken."""


class InvalidArgument(EngineError):
    """A flag, reference or option value is malformed."""


class InvalidState(EngineError):
    """The object is in a state that does not allow the operation."""


class Unsupported(EngineError):
    """The host or the engine cannot do this."""


class HostNotReady(EngineError):
    """A host prerequisite is missing (package, kernel feature, cgroup layout)."""
