"""CLI verbs for build (issue 4). Filled in by the build work; registers nothing yet."""

from __future__ import annotations


def register(sub) -> None:
    return None
