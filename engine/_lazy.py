"""Lazy module references: `berth` pays for a module only when a command uses it
(the CLI's start-up time is part of every `berth run`)."""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    def __init__(self, name: str):
        self._name = name
        self._mod: ModuleType | None = None

    def __getattr__(self, attr: str):
        if self._mod is None:
            self._mod = importlib.import_module(self._name)
        return getattr(self._mod, attr)


def lazy(name: str) -> LazyModule:
    return LazyModule(name)
