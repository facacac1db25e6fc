"""The host's wiring as a graph: what the topology page draws (issue 6).

The graph joins two sources. Berth's records say which networks and containers
exist and who is a member of what (the endpoints table, published ports,
``--network host|container:X``); the kernel, read with ``ip -j -d -s link`` (and
the routing tables for addresses) in the engine's host namespace, says what is
really there: each bridge and veth
end (present? up? on which bridge?), host interfaces, and the byte counters
the traffic rates come from. A veth whose host end is missing or sits on the
wrong bridge is drawn, flagged with what the kernel says.

Shape (plain JSON, also served as /topology/graph.json)::

    {"nodes": [{"id", "kind", "label", ...}], "edges": [{"id", "source", "target",
     "kind", "label", ...}]}

Node ids are stable (``ctr:<container id>``, ``net:<network id>``,
``if:<name>``, ``port:<proto>:<ip>:<port>``, ``host``) so a page can apply
``diff()`` without moving the nodes that did not change.

Node kinds: host, hostif (an interface of the host that Berth did not make),
network (driver bridge | macvlan | ipvlan | host), container, port.
Edge kinds: hostif (interface -> host), uplink (bridge network -> host: routed
and NAT'd out), parent (macvlan/ipvlan network -> its parent interface), veth
(container -> bridge network, the host end named), sublink (container ->
macvlan/ipvlan network), hostnet (container on the host's network), shares
(container -> the container whose network namespace it uses), listen (host ->
published port), publish (published port -> container: host-ip:port -> port).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from engine.containers import records
from engine.containers.records import Container
from engine.network import store
from engine.network.store import Endpoint, NetworkRecord

__all__ = [
    "HostLinks",
    "Member",
    "State",
    "build",
    "counters",
    "diff",
    "graph",
    "host_ends",
    "load_state",
    "rates",
    "read_host_links",
]

HOST = "host"


@dataclass
class Member:
    """What the graph needs of a container record (read without building the whole
    Container: with hundreds of rows, CreateOptions parsing is most of a build)."""

    id: str
    name: str
    image_ref: str
    state: str
    pid: int
    network: str  # --network as given ("" = the engine's default)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @classmethod
    def of(cls, c: Container) -> Member:
        return cls(c.id, c.name, c.image_ref, c.state, c.pid, c.opts.network, c.extra)

    @classmethod
    def from_row(cls, r: Any) -> Member:
        cfg = json.loads(r["config"])
        return cls(r["id"], r["name"], r["image_ref"], r["state"], r["pid"],
                   (cfg.get("opts") or {}).get("network", ""), cfg.get("extra") or {})  # fmt: skip


@dataclass
class State:
    """What the records say: networks, endpoints, running containers."""

    networks: list[NetworkRecord]
    endpoints: list[Endpoint]
    containers: list[Member | Container]
    default_network: str = "bridge"
    host_label: str = "host"

    def __post_init__(self) -> None:
        self.containers = [c if isinstance(c, Member) else Member.of(c) for c in self.containers]


@dataclass
class HostLinks:
    """What the kernel says: ``ip -j -d -s link`` entries of the host namespace by name,
    each with ``addr_info`` (IPv4) as ``ip addr`` has it.

    ``read`` is False when the kernel could not be asked (then nothing is flagged)."""

    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    read: bool = True
    time: float = 0.0


# -- reading ------------------------------------------------------------------------------


def _ip(host_netns: str, *args: str) -> subprocess.Popen:
    cmd = ["ip", *(["-n", host_netns] if host_netns else []), "-j", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _json(p: subprocess.Popen) -> list[dict[str, Any]] | None:
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None
    if p.returncode != 0:
        return None
    try:
        return json.loads(out or "[]")
    except json.JSONDecodeError:
        return None


def read_host_links(host_netns: str) -> HostLinks:
    """Every link of the host namespace (kind, master, flags, counters) and its IPv4
    addresses, from two dumps run side by side.

    ``ip addr show`` would give both in one call but costs twice ``ip link show``
    with hundreds of veths (it dumps every link and then every address); the
    addresses come instead from the routing tables, which hold only the few
    interfaces that have one: a ``local`` route per address, and the kernel's
    connected route (with ``prefsrc``) for its prefix length."""
    t = time.monotonic()
    try:
        links_p = _ip(host_netns, "-d", "-s", "link", "show")
        routes_p = _ip(host_netns, "-4", "route", "show", "table", "all")
    except OSError:
        return HostLinks(read=False, time=t)
    entries, routes = _json(links_p), _json(routes_p)
    if entries is None:
        return HostLinks(read=False, time=t)
    links = {e["ifname"]: e for e in entries if "ifname" in e}
    prefix: dict[tuple[str, str], int] = {}
    for r in routes or []:
        dst, src = r.get("dst", ""), r.get("prefsrc", "")
        if src and "/" in dst and r.get("protocol") == "kernel":
            prefix[(r.get("dev", ""), src)] = int(dst.split("/")[1])
    for r in routes or []:
        dev = links.get(r.get("dev", ""))
        ip = r.get("dst", "")
        # One local route per address (plain a.b.c.d; "/8" ones are loopback's range).
        if r.get("type") == "local" and dev is not None and "/" not in ip and ip.count(".") == 3:
            dev.setdefault("addr_info", []).append(
                {"family": "inet", "local": ip, "prefixlen": prefix.get((dev["ifname"], ip), 32)}
            )
    return HostLinks(links, True, t)


def load_state(eng: Any, running_only: bool = True) -> State:
    """The records, read without side effects: unlike ``Engine.get_network`` this never
    makes the default bridge (a page view must not change the host)."""
    store.ensure_schema(eng.db)
    cols = "id, name, image_ref, state, pid, config"
    if running_only:
        marks = ",".join("?" * len(records.ACTIVE))
        rows = eng.db.query(
            f"SELECT {cols} FROM containers WHERE state IN ({marks})", records.ACTIVE
        )
        cs = [m for m in map(Member.from_row, rows) if _alive(m.pid)]
    else:
        cs = [Member.from_row(r) for r in eng.db.query(f"SELECT {cols} FROM containers")]
    eps = [store.endpoint_from_row(r) for r in eng.db.query("SELECT * FROM endpoints")]
    cfg = eng.config
    return State(
        networks=store.all_networks(eng.db),
        endpoints=eps,
        containers=cs,
        default_network=cfg.default_network,
        host_label=f"host ({cfg.host_netns})" if cfg.host_netns else "host",
    )


def _alive(pid: int) -> bool:
    """The process exists. (A zombie counts: the exit handler's "die" event follows at
    once and the graph is rebuilt then; reading /proc/PID/stat for each of hundreds of
    containers would cost more than the rest of the build.)"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def graph(eng: Any) -> dict[str, Any]:
    """The engine's graph now (records + kernel)."""
    return build(load_state(eng), read_host_links(eng.config.host_netns), eng.config.prefix)


def host_ends(host_netns: str, pid: int) -> dict[str, dict[str, Any]]:
    """Each interface of process ``pid``'s network namespace -> its other end in the
    host namespace, found by the kernel's peer index (IFLA_LINK), not by Berth's
    records: a veth's host end (checked to point back at it) and the bridge it is on,
    or a macvlan/ipvlan link's parent interface. Interfaces without one are left out."""
    cmd = ["nsenter", f"--net=/proc/{pid}/ns/net", "--", "ip", "-j", "-d", "link", "show"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        inside = json.loads(p.stdout or "[]") if p.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        inside = []
    host = read_host_links(host_netns)
    by_index = {ln.get("ifindex"): ln for ln in host.links.values()}
    out: dict[str, dict[str, Any]] = {}
    for ln in inside:
        peer = by_index.get(ln.get("link_index"))
        if peer is None or "link_netnsid" not in ln:
            continue  # no peer, or one in the container's own namespace
        kind = _kind(ln)
        if kind == "veth" and peer.get("link_index") != ln.get("ifindex"):
            continue  # same index, another namespace's link
        out[ln["ifname"]] = {
            "Kind": kind,
            "HostIfname": peer["ifname"],
            "Bridge": peer.get("master", "") if kind == "veth" else "",
            "Role": "veth host end" if kind == "veth" else f"{kind or 'link'} parent",
            "State": "up" if _up(peer) else "down",
        }
    return out


# -- building -----------------------------------------------------------------------------


def _kind(link: dict[str, Any]) -> str:
    return (link.get("linkinfo") or {}).get("info_kind", "")


def _up(link: dict[str, Any]) -> bool:
    return "UP" in (link.get("flags") or [])


def _ipv4(link: dict[str, Any]) -> list[str]:
    return [
        f"{a['local']}/{a['prefixlen']}"
        for a in link.get("addr_info") or []
        if a.get("family") == "inet" and "local" in a
    ]


def _resolve(containers: list[Member], ref: str) -> Member | None:
    for c in containers:
        if ref in (c.id, c.name):
            return c
    hits = [c for c in containers if c.id.startswith(ref)]
    return hits[0] if len(hits) == 1 else None


class _Builder:
    def __init__(self, state: State, host: HostLinks, prefix: str) -> None:
        self.s, self.h, self.prefix = state, host, prefix
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[str, dict[str, Any]] = {}
        self.nets = {n.id: n for n in state.networks}
        self.ours: set[str] = set()  # host links that belong to networks/containers

    def node(self, id_: str, kind: str, label: str, **data: Any) -> dict[str, Any]:
        n = {"id": id_, "kind": kind, "label": label, **data}
        self.nodes[id_] = n
        return n

    def edge(self, id_: str, source: str, target: str, kind: str, label: str = "", **data: Any):
        self.edges[id_] = {
            "id": id_,
            "source": source,
            "target": target,
            "kind": kind,
            "label": label,
            **data,
        }

    # -- the host side ----------------------------------------------------------------
    def host(self) -> None:
        self.node(HOST, "host", self.s.host_label, kernel_read=self.h.read)

    def network(self, n: NetworkRecord) -> None:
        nid = f"net:{n.id}"
        data: dict[str, Any] = {
            "name": n.name,
            "driver": n.driver,
            "subnet": n.subnet,
            "gateway": n.gateway,
            "internal": n.internal,
            "network_id": n.id,
        }
        label = n.name
        if n.driver == "bridge":
            self.ours.add(n.bridge)
            data["bridge"] = n.bridge
            data["state"] = self._link_state(n.bridge, want_kind="bridge")
            label = f"{n.name}\n{n.bridge} {n.subnet}"
            self.node(nid, "network", label, **data)
            if not n.internal:
                self.edge(f"uplink:{n.id}", nid, HOST, "uplink", "NAT" if n.subnet else "")
            else:
                # Drawn (dashed) so the page shows where an internal network ends.
                self.edge(f"uplink:{n.id}", nid, HOST, "uplink", "internal", internal=True)
        elif n.driver in ("macvlan", "ipvlan"):
            data["parent"] = n.parent
            label = f"{n.name}\n{n.driver} on {n.parent or '?'} {n.subnet}"
            data["state"] = self._link_state(n.parent) if n.parent else "no parent"
            self.node(nid, "network", label, **data)
            if n.parent:
                self._hostif(n.parent)
                self.edge(f"parent:{n.id}", nid, f"if:{n.parent}", "parent", n.driver)
        elif n.driver == "host":
            self.node(nid, "network", "host network", **data)
            self.edge(f"uplink:{n.id}", nid, HOST, "uplink", "same namespace")

    def _link_state(self, name: str, want_kind: str | None = None) -> str:
        if not self.h.read:
            return "unknown"
        link = self.h.links.get(name)
        if link is None:
            return "missing"
        if want_kind is not None and _kind(link) != want_kind:
            return f"not a {want_kind}"
        return "up" if _up(link) else "down"

    def _hostif(self, name: str) -> None:
        nid = f"if:{name}"
        if nid in self.nodes:
            return
        link = self.h.links.get(name, {})
        self.ours.add(name)
        self.node(nid, "hostif", name, name=name, addresses=_ipv4(link),
                  state=self._link_state(name), mac=link.get("address", ""))  # fmt: skip
        self.edge(f"hostif:{name}", nid, HOST, "hostif")

    def host_interfaces(self) -> None:
        """The host's own interfaces: not loopback, nothing Berth made (bridges of
        networks, veth host ends, links carrying the instance prefix)."""
        for name, link in sorted(self.h.links.items()):
            if name == "lo" or name in self.ours or name.startswith(self.prefix):
                continue
            if _kind(link) == "veth" and link.get("master"):
                continue  # another engine's (or Docker's) container link: not the host's own
            self._hostif(name)

    # -- containers ---------------------------------------------------------------------
    def container(self, c: Member, eps: list[Endpoint]) -> None:
        cid = f"ctr:{c.id}"
        mode = c.network or self.s.default_network
        addrs = []
        for ep in eps:
            n = self.nets.get(ep.network_id)
            if ep.ip and n is not None:
                addrs.append({"network": n.name, "ip": ep.ip, "ifname": ep.ifname})
        self.node(
            cid,
            "container",
            c.name + "".join(f"\n{a['ip']}" for a in addrs),
            name=c.name,
            container_id=c.id,
            short_id=c.short_id,
            image=c.image_ref,
            state=c.state,
            mode=mode if mode in ("host", "none") or mode.startswith("container:") else "",
            addresses=addrs,
            networks=sorted({a["network"] for a in addrs}),
        )
        if mode.startswith("container:"):
            other = _resolve(self.s.containers, mode.split(":", 1)[1])
            if other is not None:
                self.edge(f"shares:{c.id}", cid, f"ctr:{other.id}", "shares", "shares netns")
                self.nodes[cid]["networks"] = ["container:" + other.name]
            return
        if mode == "host":
            hostnet = next((n for n in self.s.networks if n.driver == "host"), None)
            if hostnet is not None:
                self.network_once(hostnet)
                self.edge(f"hostnet:{c.id}", cid, f"net:{hostnet.id}", "hostnet", "host network")
            else:
                self.edge(f"hostnet:{c.id}", cid, HOST, "hostnet", "host network")
            self.nodes[cid]["networks"] = ["host"]
            return
        for ep in eps:
            n = self.nets.get(ep.network_id)
            if n is None:
                continue
            self.network_once(n)
            if n.driver == "bridge":
                self._veth(c, ep, n)
            elif n.driver in ("macvlan", "ipvlan"):
                self.edge(f"sub:{c.id}:{n.id}", cid, f"net:{n.id}", "sublink",
                          f"{ep.ifname} {ep.ip}", ifname=ep.ifname, ip=ep.ip, mac=ep.mac)  # fmt: skip
        self._ports(c)

    def network_once(self, n: NetworkRecord) -> None:
        if f"net:{n.id}" not in self.nodes:
            self.network(n)

    def _veth(self, c: Member, ep: Endpoint, n: NetworkRecord) -> None:
        self.ours.add(ep.host_ifname)
        state = "up"
        problem = ""
        if self.h.read:
            link = self.h.links.get(ep.host_ifname)
            if link is None:
                state, problem = "missing", f"host end {ep.host_ifname} does not exist"
            elif link.get("master") != n.bridge:
                state = "detached"
                problem = (
                    f"host end {ep.host_ifname} is on {link.get('master') or 'no bridge'},"
                    f" not {n.bridge}"
                )
            elif not _up(link):
                state, problem = "down", f"host end {ep.host_ifname} is down"
        self.edge(
            f"veth:{ep.host_ifname}",
            f"ctr:{c.id}",
            f"net:{n.id}",
            "veth",
            f"{ep.ifname} ⇄ {ep.host_ifname}",
            host_ifname=ep.host_ifname,
            ifname=ep.ifname,
            ip=ep.ip,
            mac=ep.mac,
            bridge=n.bridge,
            state=state,
            problem=problem,
        )

    def _ports(self, c: Member) -> None:
        target = c.extra.get("port_target") or {}
        for d in c.extra.get("ports") or []:
            proto, hip, hport, cport = d["proto"], d["host_ip"], d["host_port"], d["container_port"]
            pid_ = f"port:{proto}:{hip}:{hport}"
            self.node(pid_, "port", f"{hip}:{hport}/{proto}", proto=proto, host_ip=hip,
                      host_port=hport, container=c.name)  # fmt: skip
            self.edge(f"listen:{proto}:{hip}:{hport}", HOST, pid_, "listen")
            dest = target.get("ip") or c.name
            self.edge(
                f"publish:{proto}:{hip}:{hport}",
                pid_,
                f"ctr:{c.id}",
                "publish",
                f"{hip}:{hport} → {dest}:{cport}/{proto}",
                proto=proto,
                host_ip=hip,
                host_port=hport,
                container_port=cport,
                container_ip=target.get("ip", ""),
            )

    def build(self) -> dict[str, Any]:
        self.host()
        for n in self.s.networks:
            # Predefined host/none networks only when someone uses them.
            if n.driver in ("bridge", "macvlan", "ipvlan"):
                self.network(n)
        by_ctr: dict[str, list[Endpoint]] = {}
        for ep in self.s.endpoints:
            by_ctr.setdefault(ep.container_id, []).append(ep)
        for eps in by_ctr.values():
            eps.sort(key=lambda e: e.ifname)
        for c in sorted(self.s.containers, key=lambda c: c.name):
            self.container(c, by_ctr.get(c.id, []))
        self.host_interfaces()
        # An edge to a node that is not drawn (a shared netns whose owner stopped).
        for eid in [e for e, v in self.edges.items() if v["target"] not in self.nodes]:
            del self.edges[eid]
        return {"nodes": list(self.nodes.values()), "edges": list(self.edges.values())}


def build(state: State, host: HostLinks | None = None, prefix: str = "berth") -> dict[str, Any]:
    """The graph from records (``state``) and the kernel's links (``host``)."""
    return _Builder(state, host or HostLinks(read=False), prefix).build()


# -- diffs and rates ----------------------------------------------------------------------


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from ``old`` to ``new``: added/updated elements in full, removed by id.

    Edges are removed before nodes and added after them on the page, so an edge
    never points at a node that is not there."""
    out: dict[str, Any] = {}
    for part in ("nodes", "edges"):
        a = {x["id"]: x for x in old.get(part, [])}
        b = {x["id"]: x for x in new.get(part, [])}
        out[part] = {
            "add": [b[i] for i in b if i not in a],
            "remove": [i for i in a if i not in b],
            "update": [b[i] for i in b if i in a and a[i] != b[i]],
        }
    return out


def is_empty(d: dict[str, Any]) -> bool:
    return not any(v for part in d.values() for v in part.values())


def counters(g: dict[str, Any], host: HostLinks) -> dict[str, Any]:
    """Byte counters of each veth edge, from the host end (rx there = sent by the
    container), and of each bridge's uplink, from the bridge device (rx = from its
    containers into the host: routed, NAT'd, or to the host itself)."""
    bridges = {n["id"]: n.get("bridge", "") for n in g["nodes"] if n["kind"] == "network"}
    out: dict[str, list[int]] = {}
    for e in g["edges"]:
        if e["kind"] == "veth":
            dev = e["host_ifname"]
        elif e["kind"] == "uplink" and bridges.get(e["source"]):
            dev = bridges[e["source"]]
        else:
            continue
        st = (host.links.get(dev) or {}).get("stats64") or {}
        if st:
            out[e["id"]] = [int(st["rx"]["bytes"]), int(st["tx"]["bytes"])]
    return {"time": host.time, "edges": out}


def rates(prev: dict[str, Any], cur: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Bytes/s per edge between two ``counters()`` samples: ``out`` is what the container
    (for an uplink: the network) sent, ``in`` what it received; an edge new in ``cur``
    (or reset) is left out."""
    dt = cur["time"] - prev["time"]
    if dt <= 0:
        return {}
    out = {}
    for eid, (rx, tx) in cur["edges"].items():
        p = prev["edges"].get(eid)
        if p is None or rx < p[0] or tx < p[1]:
            continue
        out[eid] = {"out": round((rx - p[0]) / dt, 1), "in": round((tx - p[1]) / dt, 1)}
    return out
