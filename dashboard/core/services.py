"""Kept for the overview: the service layer is dashboard/services/."""

from __future__ import annotations

from dashboard.services import engine_for


def engine():
    return engine_for(None)


def engine_info() -> dict:
    return engine().info()
