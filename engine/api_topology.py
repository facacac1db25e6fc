"""The topology part of the Engine facade: the host's wiring as a graph (issue 6)."""

from __future__ import annotations


class TopologyAPI:
    pass
