"""CLI verbs for advise (issue 4). Filled in by the advise work; registers nothing yet."""

from __future__ import annotations


def register(sub) -> None:
    return None
