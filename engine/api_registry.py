"""The registry part of the Engine facade (pull, push, login, logout; issue 4)."""

from __future__ import annotations


class RegistryAPI:
    pass
