"""The result type shared by the preflight and the orphan check."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["ok", "warn", "error"]


@dataclass
class Finding:
    """One thing the check looked at.

    ``severity`` says how bad it was when found; ``fixed`` says the check
    repaired it (so an error with ``fixed=True`` no longer counts). ``obj``
    names the object (a path, a pid, a container ID) for tools and tests.
    """

    id: str
    severity: Severity
    message: str
    fixed: bool = False
    hint: str = ""
    obj: str = ""

    @property
    def remaining_error(self) -> bool:
        return self.severity == "error" and not self.fixed

    def to_dict(self) -> dict:
        return asdict(self)
