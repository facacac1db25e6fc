"""The dashboard's one service layer: every view, task and consumer reaches the engine here.

``engine_for(user)`` is the seam: today it is this host's engine with the user as the
events' actor; a later issue picks another host here without touching the views.
One module per area (containers, images, networks, ...) holds the operations.
"""

from __future__ import annotations

from typing import Any

from engine.api import Engine
from engine.config import EngineConfig


def actor_of(user: Any) -> str:
    name = getattr(user, "username", "") or ""
    return f"user:{name}" if name else "user:system"


def engine_for(user: Any = None) -> Engine:
    return Engine(EngineConfig.from_env(), actor=actor_of(user))
