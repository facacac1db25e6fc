"""The topology part of the Engine facade: the host's wiring as a graph (issue 6).

engine/network/topology.py builds the graph (records + one read of the
kernel's links), topology_reach.py answers "can A reach B?" on it with the
network doctor. Reading never changes the host (no default bridge is made).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config import EngineConfig
    from engine.state import StateDB


class TopologyAPI:
    config: EngineConfig
    db: StateDB

    def topology(self) -> dict[str, Any]:
        """``{"nodes": [...], "edges": [...]}`` of the host (see engine/network/topology.py)."""
        from engine.network import topology

        return topology.graph(self)

    def topology_counters(self, graph: dict[str, Any] | None = None) -> dict[str, Any]:
        """Byte counters of every veth edge now (``{"time", "edges": {id: [rx, tx]}}``)."""
        from engine.network import topology

        g = graph if graph is not None else self.topology()
        return topology.counters(g, topology.read_host_links(self.config.host_netns))

    def topology_rates(
        self, interval: float = 1.0, prev: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Bytes/s per veth edge (``{"rates": {edge id: {"in", "out"}}, "counters"}``).

        With ``prev`` (the ``counters`` of an earlier call) no waiting: the rate is
        over the time since then, the way a sampler calls it; else two samples
        ``interval`` seconds apart."""
        from engine.network import topology

        g = self.topology()
        if prev is None:
            prev = self.topology_counters(g)
            time.sleep(interval)
        cur = self.topology_counters(g)
        return {"rates": topology.rates(prev, cur), "counters": cur}

    def container_host_ends(self, ref: str) -> dict[str, dict[str, Any]]:
        """A running container's interfaces -> their ends in the host namespace (veth host
        end and its bridge, or macvlan/ipvlan parent), as the kernel links them."""
        from engine.containers import records
        from engine.errors import InvalidState
        from engine.network import topology

        c = self.get_container(ref)  # type: ignore[attr-defined]
        if c.state not in records.ACTIVE:
            raise InvalidState(f"container {c.name} is not running", obj=c.name)
        return topology.host_ends(self.config.host_netns, c.pid)

    def topology_reach(
        self, source: str, target: str, graph: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Can container SOURCE reach TARGET (a container, ``NAME:PORT``, a published
        port's node id, or ``IP:PORT``)? The doctor's verdict, its reason, and the path
        and the element where it breaks on the graph."""
        from engine.network import topology_reach

        g = graph if graph is not None else self.topology()
        return topology_reach.reach(self, g, source, target)
