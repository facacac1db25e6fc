"""The build part of the Engine facade (Dockerfile builder, issue 4)."""

from __future__ import annotations


class BuildAPI:
    pass
