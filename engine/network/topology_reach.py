""" "Can A reach B?" on the topology graph: the network doctor's verdict, drawn as a path.

The verdict and the reason are the doctor's (engine/network/doctor*.py: the
kernel's links, routes and nftables rules, and a probe run inside A's
namespace). This module only finds the path through the graph (A -> its
bridge -> the host -> ... -> B) and the element where the doctor says it
breaks, so the page can highlight both.

B is a container (name or ID) or a published port (``port:<proto>:<ip>:<port>``
node id, or ``HOST-IP:PORT``): a host port is probed at the address the
container would use to reach its host (its network's gateway) when the port
is published on every address.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.errors import InvalidArgument

__all__ = ["find_path", "reach"]


def _adjacency(g: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    adj: dict[str, list[tuple[str, str]]] = {n["id"]: [] for n in g["nodes"]}
    for e in g["edges"]:
        if e["source"] in adj and e["target"] in adj:
            adj[e["source"]].append((e["target"], e["id"]))
            adj[e["target"]].append((e["source"], e["id"]))
    return adj


def find_path(g: dict[str, Any], a: str, b: str) -> list[str]:
    """Node and edge ids alternating from ``a`` to ``b`` (shortest, undirected); [] if none.

    Containers and published ports are ends only: a path never passes through
    one to get somewhere else (a container on two networks does not route between
    them, and traffic from A to B does not go via C's port)."""
    adj = _adjacency(g)
    if a not in adj or b not in adj:
        return []
    kinds = {n["id"]: n["kind"] for n in g["nodes"]}
    shares = {e["id"] for e in g["edges"] if e["kind"] == "shares"}
    prev: dict[str, tuple[str, str] | None] = {a: None}
    q = deque([a])
    while q:
        cur = q.popleft()
        if cur == b:
            break
        step = prev[cur]
        if step is not None and kinds.get(cur) == "port":
            continue
        # A container is passed through only along a shared namespace (one stack).
        only_shares = step is not None and kinds.get(cur) == "container" and step[1] not in shares
        for nxt, eid in sorted(adj[cur]):
            if only_shares and eid not in shares:
                continue
            if nxt not in prev:
                prev[nxt] = (cur, eid)
                q.append(nxt)
    if b not in prev:
        return []
    path = [b]
    step = prev[b]
    while step is not None:
        node, eid = step
        path[:0] = [node, eid]
        step = prev[node]
    return path


def _node(g: dict[str, Any], id_: str) -> dict[str, Any] | None:
    return next((n for n in g["nodes"] if n["id"] == id_), None)


def _container_node(g: dict[str, Any], ref: str) -> dict[str, Any] | None:
    for n in g["nodes"]:
        if n["kind"] == "container" and ref in (n["container_id"], n["name"], n["id"]):
            return n
    hits = [n for n in g["nodes"] if n["kind"] == "container" and n["container_id"].startswith(ref)]
    return hits[0] if len(hits) == 1 else None


def _port_target(g: dict[str, Any], src: dict[str, Any], port: dict[str, Any]) -> str:
    ip = port["host_ip"]
    if ip in ("0.0.0.0", "::", ""):
        # Every host address: from a container the nearest is its network's gateway.
        nets = {n["name"]: n for n in g["nodes"] if n["kind"] == "network"}
        gw = next(
            (nets[a["network"]]["gateway"] for a in src.get("addresses", [])
             if a["network"] in nets and nets[a["network"]].get("gateway")),
            "127.0.0.1",
        )  # fmt: skip
        ip = gw
    return f"{ip}:{port['host_port']}"


def _break_at(g: dict[str, Any], path: list[str], finding: dict[str, Any]) -> str:
    """The graph element a failed finding is about (the page marks it)."""
    d = finding.get("details") or {}
    check = finding["check"]
    edges = {e["id"]: e for e in g["edges"]}
    nets = {n.get("name"): n["id"] for n in g["nodes"] if n["kind"] == "network"}
    if check == "isolation":
        # Dropped at the host between the two bridges: the target side's uplink.
        for name in d.get("target_networks") or []:
            if f"uplink:{nets.get(name, '')[4:]}" in path:
                return f"uplink:{nets[name][4:]}"
        return "host"
    if d.get("host_interface") and f"veth:{d['host_interface']}" in edges:
        return f"veth:{d['host_interface']}"
    if check == "internal" and d.get("network") in nets:
        uplink = f"uplink:{nets[d['network']][4:]}"
        return uplink if uplink in edges else nets[d["network"]]
    if d.get("network") in nets and nets[d["network"]] in path:
        return nets[d["network"]]
    if check in ("listening", "address") and path:
        return path[-1]
    return "host" if "host" in path else (path[0] if path else "")


def _loopback_port(g: dict[str, Any], src: dict[str, Any], port: dict[str, Any]) -> dict[str, Any]:
    """A port published on the host's loopback: by design only the host reaches it (a
    container's 127.0.0.1 is its own), so there is nothing to probe."""
    label = f"{port['host_ip']}:{port['host_port']}"
    path = find_path(g, src["id"], port["id"])
    return {
        "source": src["name"],
        "target": port["id"],
        "probed": label,
        "ok": False,
        "path": path,
        "findings": [],
        "check": "loopback",
        "reason": f"loopback: {label} is published on the host's loopback only, which no"
        f" container reaches ({src['name']}'s 127.0.0.1 is its own); publish it on 0.0.0.0"
        " or a host address to reach it from containers",
        "break_at": f"listen:{port['proto']}:{port['host_ip']}:{port['host_port']}",
    }


def reach(eng: Any, g: dict[str, Any], source: str, target: str) -> dict[str, Any]:
    """The doctor's answer for SOURCE -> TARGET with the path and the break on ``g``."""
    from engine.network.doctor import diagnose

    src = _container_node(g, source)
    if src is None:
        raise InvalidArgument(f"{source} is not a running container on this host", obj=source)
    tgt_id = ""
    text = target
    port: dict[str, Any] | None = None
    if target.startswith("port:"):
        port = _node(g, target)
        if port is None:
            raise InvalidArgument(f"no published port {target[5:]}", obj=target)
        if port["host_ip"].startswith("127."):
            return _loopback_port(g, src, port)
        text, tgt_id = _port_target(g, src, port), port["id"]
    else:
        node = _container_node(g, target.rsplit(":", 1)[0] if ":" in target else target)
        if node is not None:
            tgt_id = node["id"]
            if ":" in target:  # NAME:PORT keeps the port for the probe
                text = f"{node['name']}:{target.rsplit(':', 1)[1]}"
            else:
                text = node["name"]
        else:
            host, _, port_s = target.rpartition(":")
            hit = [
                n
                for n in g["nodes"]
                if n["kind"] == "port"
                and str(n["host_port"]) == port_s
                and n["host_ip"] in (host, "0.0.0.0")
            ]
            tgt_id = hit[0]["id"] if hit else "host"
    report = diagnose(eng, src["name"], text).to_dict()
    path = find_path(g, src["id"], tgt_id) if tgt_id else []
    if port is not None and path:
        # On through the DNAT to the container behind the port.
        pub = next((e for e in g["edges"] if e["kind"] == "publish" and e["source"] == port["id"]),
                   None)  # fmt: skip
        if pub is not None:
            path += [pub["id"], pub["target"]]
    failed = [f for f in report["findings"] if f["status"] == "fail"]
    # The doctor's root cause: the first failure about this pair, else any host failure.
    pair = [f for f in failed if f["check"] in ("isolation", "internal", "reachability",
                                                 "listening", "address", "target", "veth")]  # fmt: skip
    cause = (pair or failed or [None])[0]
    reach_ok = any(
        f["check"] in ("reachability", "target") and f["status"] == "ok" for f in report["findings"]
    )
    out: dict[str, Any] = {
        "source": src["name"],
        "target": target,
        "probed": text,
        "ok": reach_ok and cause is None,
        "path": path,
        "findings": report["findings"],
    }
    if cause is not None:
        out["reason"] = cause["message"]
        out["check"] = cause["check"]
        out["break_at"] = _break_at(g, path, cause)
    elif not reach_ok:
        warn = [f for f in report["findings"] if f["status"] == "warn"]
        out["reason"] = warn[0]["message"] if warn else "the doctor found no answer"
    return out
