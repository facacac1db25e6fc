"""CLI verbs for registry (issue 4). Filled in by the registry work; registers nothing yet."""

from __future__ import annotations


def register(sub) -> None:
    return None
