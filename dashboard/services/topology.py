"""The topology page's door to the engine: the graph, counters for rates, "can A
reach B?", a container's anatomy. Views and the topology consumer call only these.

The graph is the same for every user (the engine's host); who may see it and
which actions a node offers is decided in the views, by role.
"""

from __future__ import annotations

from typing import Any

from engine.errors import EngineError, InvalidArgument, InvalidState, NotFound
from engine.network import topology as _topology

from . import engine_for

__all__ = [
    "EngineError",
    "InvalidArgument",
    "InvalidState",
    "NotFound",
    "anatomy",
    "counters",
    "diff",
    "graph",
    "is_empty",
    "rates",
    "reach",
    "relevant",
]

diff = _topology.diff
is_empty = _topology.is_empty
rates = _topology.rates

# Engine events after which the drawing may change; the rest (exec, health, logs,
# images, volumes) cannot move a node or an edge.
_CONTAINER_ACTIONS = frozenset(
    {"start", "die", "stop", "kill", "destroy", "pause", "unpause", "rename", "restart"}
)


def relevant(ev: dict[str, Any]) -> bool:
    """Whether an engine event (engine/events.py's dict) can change the graph."""
    if ev.get("type") == "network":
        return True
    return ev.get("type") == "container" and ev.get("action") in _CONTAINER_ACTIONS


def graph(user: Any = None) -> dict[str, Any]:
    return engine_for(user).topology()


def counters(g: dict[str, Any], user: Any = None) -> dict[str, Any]:
    """Byte counters of ``g``'s veth edges now (for ``rates(prev, cur)``)."""
    return engine_for(user).topology_counters(g)


def reach(user: Any, source: str, target: str) -> dict[str, Any]:
    """The network doctor's answer to "can SOURCE reach TARGET?" with its path on the graph.

    TARGET is what the page offers: a container on the diagram (optionally NAME:PORT)
    or a published port's node. The doctor also probes arbitrary addresses (the CLI
    allows it); from the dashboard, where a viewer may ask, probes stay inside the
    diagram."""
    if not source or not target:
        raise InvalidArgument("pick a container and a target")
    eng = engine_for(user)
    g = eng.topology()
    names = {n["name"] for n in containers(g)}
    ports_ = {n["id"] for n in ports(g)}
    host, _, port = target.rpartition(":") if ":" in target else (target, "", "")
    ok = target in names or target in ports_ or (host in names and port.isdigit())
    if not ok:
        raise InvalidArgument(
            f"{target}: not a container or a published port on the diagram", obj=target
        )
    return eng.topology_reach(source, target, graph=g)


def containers(g: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((n for n in g["nodes"] if n["kind"] == "container"), key=lambda n: n["name"])


def ports(g: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in g["nodes"] if n["kind"] == "port"]


def networks(g: dict[str, Any]) -> list[str]:
    return sorted(n["name"] for n in g["nodes"] if n["kind"] == "network")


def node(g: dict[str, Any], node_id: str) -> dict[str, Any]:
    for n in g["nodes"]:
        if n["id"] == node_id:
            return n
    raise NotFound(f"{node_id} is not on the diagram (any more)", obj=node_id)


def edges_of(g: dict[str, Any], node_id: str) -> list[dict[str, Any]]:
    return [e for e in g["edges"] if node_id in (e["source"], e["target"])]


def anatomy(user: Any, ref: str) -> dict[str, Any]:
    """What the kernel says the container is made of (engine/containers/anatomy.py),
    with each interface's other end in the host namespace (its peer, by the kernel's
    link index): the veth's host end and bridge, or a macvlan/ipvlan parent."""
    eng = engine_for(user)
    a = eng.container_anatomy(ref)
    try:
        ends = eng.container_host_ends(a["Id"])
    except EngineError:
        ends = {}  # exited meanwhile: the rest was read while it ran
    if isinstance(a.get("Interfaces"), list):
        for ln in a["Interfaces"]:
            end = ends.get(ln.get("Name"))
            if end is not None:
                ln["HostEnd"] = end
    return a
