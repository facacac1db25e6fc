"""The dashboard's one service layer: every view goes through here to reach the engine.

A later issue points this at another host; views never import engine modules.
"""

from __future__ import annotations

from engine.api import Engine
from engine.config import EngineConfig


def engine() -> Engine:
    return Engine(EngineConfig.from_env())


def engine_info() -> dict:
    return engine().info()
