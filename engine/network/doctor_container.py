"""The network doctor's container checks: what the container's own namespace shows.

Interfaces, addresses and routes are read inside the container's network
namespace (``nsenter --net=... ip -j``: what ``nsenter -t PID -n ip a`` would
show); the host end of each veth is found in the engine's host namespace by
the peer index the kernel reports for the container's interface (``link_index``),
so a renamed or re-created link is still found, and only then by the name
Berth recorded. Berth's records say what should be there: which networks, which
address, which bridge.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from engine.errors import EngineError
from engine.network.doctor import Context, has_flag, ip_json, ipv4_addrs, kind, ns_ip

__all__ = ["Source", "diagnose_container", "netns_of"]


@dataclass
class Source:
    """A running container as the doctor sees it."""

    record: Any  # engine.containers.records.Container
    netns: str  # path of its network namespace file
    links: dict[str, dict[str, Any]] = field(default_factory=dict)  # ifname -> ip -j addr
    routes: list[dict[str, Any]] = field(default_factory=list)
    # (endpoint, network record) for every bridge network it is on, eth0 first
    endpoints: list[tuple[Any, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.record.name

    def addresses(self) -> list[str]:
        """Every IPv4 address (without length) in its namespace but loopback's."""
        return [
            a.split("/")[0] for n, ln in self.links.items() if n != "lo" for a in ipv4_addrs(ln)
        ]


def netns_of(ctx: Context, c: Any) -> str:
    """The container's netns file: ours under /run/netns, else its process's."""
    from engine.containers.records import Paths

    named = f"/run/netns/{Paths(ctx.eng.config, c.id).netns_name}"
    if os.path.exists(named):
        return named
    return f"/proc/{c.pid}/ns/net"


def load(ctx: Context, c: Any) -> Source:
    """Read a running container's namespace (links, addresses, routes)."""
    from engine.network import store

    path = netns_of(ctx, c)
    src = Source(record=c, netns=path)
    src.links = {ln["ifname"]: ln for ln in ip_json(ns_ip(path), "-d", "addr", "show")}
    src.routes = ip_json(ns_ip(path), "-4", "route", "show")
    for ep in store.endpoints_of_container(ctx.eng.db, c.id):
        net = ctx.network(ep.network_id)
        if net is not None:
            src.endpoints.append((ep, net))
    src.endpoints.sort(key=lambda pair: pair[0].ifname)
    return src


def running(ctx: Context, ref: str, role: str) -> Any | None:
    """The container record if it is running; otherwise a failed finding and None."""
    c = ctx.eng.get_container(ref)
    if c.state not in ("running", "paused") or not c.pid:
        ctx.report.add(
            "container",
            "fail",
            f"{role} {c.name} is not running (state {c.state}): it has no network namespace"
            f" (fix: berth start {c.name})",
            container=c.name,
        )
        return None
    return c


def diagnose_container(ctx: Context, ref: str) -> Source | None:
    c = running(ctx, ref, "container")
    if c is None:
        return None
    mode = c.opts.network or "none"
    if mode == "host":
        ctx.report.add(
            "container",
            "ok",
            f"{c.name} uses the host's network stack (--network host): the host checks apply",
            container=c.name,
            mode=mode,
        )
        return None
    owner = c
    if mode.startswith("container:"):
        # It joined another container's namespace: diagnose that one's plumbing.
        owner = running(ctx, mode.split(":", 1)[1], f"{c.name}'s network owner")
        if owner is None:
            return None
    src = load(ctx, owner)
    src.record = c
    ctx.report.add(
        "container",
        "ok",
        f"{c.name} is running (pid {c.pid}), network {mode}, namespace {src.netns}",
        container=c.name,
        mode=mode,
        netns=src.netns,
    )
    _summary(ctx, src)
    if not src.endpoints:
        if mode == "none":
            ctx.report.add(
                "interfaces",
                "ok",
                f"{c.name} has --network none: only loopback, no way out",
                container=c.name,
            )
        return src
    for i, (ep, net) in enumerate(src.endpoints):
        _check_endpoint(ctx, src, ep, net, primary=i == 0)
    return src


def _summary(ctx: Context, src: Source) -> None:
    """The `ip a` / `ip r` view, for the reader (always ok; the checks judge)."""
    parts = []
    for name, ln in src.links.items():
        state = "UP" if has_flag(ln, "UP") else "DOWN"
        if has_flag(ln, "NO-CARRIER"):
            state += ",NO-CARRIER"
        parts.append(f"{name} {' '.join(ipv4_addrs(ln)) or '(no address)'} [{state}]")
    routes = [_route_text(r) for r in src.routes]
    ctx.report.add(
        "interfaces",
        "ok",
        f"{src.name}'s namespace: {'; '.join(parts)}; routes: {'; '.join(routes) or 'none'}",
        container=src.name,
        links={
            n: {
                "flags": ln.get("flags", []),
                "operstate": ln.get("operstate"),
                "mac": ln.get("address"),
                "mtu": ln.get("mtu"),
                "addresses": ipv4_addrs(ln),
            }
            for n, ln in src.links.items()
        },
        routes=routes,
    )
    lo = src.links.get("lo")
    if lo is not None and not has_flag(lo, "UP"):
        ctx.report.add(
            "link",
            "warn",
            f"loopback is down in {src.name}: programs cannot talk to 127.0.0.1",
            container=src.name,
            interface="lo",
        )


def _route_text(r: dict[str, Any]) -> str:
    text = r.get("dst", "?")
    if r.get("gateway"):
        text += f" via {r['gateway']}"
    if r.get("dev"):
        text += f" dev {r['dev']}"
    return text


def _host_cmd(ctx: Context) -> str:
    return f"ip -n {ctx.host_netns}" if ctx.host_netns else "ip"


def _check_endpoint(ctx: Context, src: Source, ep: Any, net: Any, primary: bool) -> None:
    who = f"{src.name}'s {ep.ifname}"
    d = {"container": src.name, "interface": ep.ifname, "network": net.name}
    link = src.links.get(ep.ifname)
    if link is None:
        ctx.report.add(
            "link",
            "fail",
            f"{who} (network {net.name}) does not exist inside its namespace"
            f" (fix: berth network disconnect {net.name} {src.name}, then connect it again)",
            **d,
        )
        return
    veth_broken = _check_veth(ctx, src, ep, net, link, d)

    # Link state of the container's end.
    if not has_flag(link, "UP"):
        ctx.report.add(
            "link",
            "fail",
            f"{who} is down inside its namespace (fix: nsenter --net={src.netns}"
            f" ip link set {ep.ifname} up)",
            **d,
        )
    elif has_flag(link, "NO-CARRIER") or link.get("operstate") == "LOWERLAYERDOWN":
        if veth_broken:
            ctx.report.add(
                "link", "warn", f"{who} has no carrier because of its host end (see veth)", **d
            )
        else:
            ctx.report.add("link", "fail", f"{who} is up but has no carrier", **d)
    else:
        ctx.report.add("link", "ok", f"{who} is up", **d)

    # Address.
    prefixlen = ipaddress.ip_network(net.subnet).prefixlen
    want = f"{ep.ip}/{prefixlen}"
    have = ipv4_addrs(link)
    if want in have:
        ctx.report.add("address", "ok", f"{who} has {want} on network {net.name}", **d)
    elif not have:
        ctx.report.add(
            "address",
            "fail",
            f"{who} has no IPv4 address (Berth assigned {want} on network {net.name})"
            f" (fix: nsenter --net={src.netns} ip addr add {want} dev {ep.ifname})",
            **d,
        )
        return  # no address: the routes below cannot be there either
    else:
        ctx.report.add(
            "address",
            "fail",
            f"{who} has {', '.join(have)} but Berth assigned {want} on network {net.name}:"
            " the address changed by hand, other containers look for the assigned one",
            **d,
        )

    # Routes: the connected one, and the default via the gateway on the first network.
    subnet = ipaddress.ip_network(net.subnet)
    connected = any(
        r.get("dst") == str(subnet) and r.get("dev") == ep.ifname and not r.get("gateway")
        for r in src.routes
    )
    if connected:
        ctx.report.add("routes", "ok", f"{src.name} routes {subnet} through {ep.ifname}", **d)
    else:
        ctx.report.add(
            "routes",
            "fail",
            f"{src.name} has no route for {subnet} through {ep.ifname}: it cannot reach network"
            f" {net.name} (fix: nsenter --net={src.netns} ip route add {subnet} dev {ep.ifname})",
            **d,
        )
    if not primary:
        return
    default = [r for r in src.routes if r.get("dst") == "default"]
    if net.internal:
        if default:
            ctx.report.add(
                "gateway",
                "warn",
                f"{src.name} is on internal network {net.name} but has a default route"
                f" ({_route_text(default[0])}): Berth's firewall still drops traffic out",
                **d,
            )
        else:
            ctx.report.add(
                "gateway",
                "ok",
                f"{src.name} has no default route: network {net.name} is internal (no way out)",
                **d,
            )
        return
    gw = [r for r in default if r.get("gateway") == net.gateway and r.get("dev") == ep.ifname]
    if gw:
        ctx.report.add("gateway", "ok", f"{src.name}'s default gateway is {net.gateway}", **d)
    elif default:
        ctx.report.add(
            "gateway",
            "fail",
            f"{src.name}'s default route is {_route_text(default[0])}, not via {net.gateway}"
            f" on {ep.ifname} (the gateway of network {net.name})",
            **d,
        )
    else:
        ctx.report.add(
            "gateway",
            "fail",
            f"{src.name} has no default route: it can reach only its own networks"
            f" (fix: nsenter --net={src.netns} ip route add default via {net.gateway})",
            **d,
        )


def _check_veth(
    ctx: Context, src: Source, ep: Any, net: Any, link: dict[str, Any], d: dict[str, Any]
) -> bool:
    """Check the host end of the container's veth; True if it is broken."""
    who = f"{src.name}'s {ep.ifname}"
    if kind(link) not in ("veth", ""):
        return False  # not a veth (macvlan...): no host end to look at
    peer = None
    if isinstance(link.get("link_index"), int):
        peer = ctx.link_by_index(link["link_index"])
        if peer is not None and kind(peer) != "veth":
            peer = None  # the index belongs to another namespace's numbering
    if peer is None and ep.host_ifname:
        peer = ctx.host_links.get(ep.host_ifname)
    host_if = peer["ifname"] if peer else ep.host_ifname
    dd = {**d, "host_interface": host_if, "bridge": net.bridge}
    if peer is None:
        ctx.report.add(
            "veth",
            "fail",
            f"the host end {host_if or '?'} of {who} (network {net.name}) does not exist in"
            f" {ctx.where}: {src.name} is cut off from {net.name}"
            f" (fix: berth restart {src.name})",
            **dd,
        )
        return True
    if not has_flag(peer, "UP"):
        ctx.report.add(
            "veth",
            "fail",
            f"the host end {host_if} of {who} (network {net.name}) is down in {ctx.where}:"
            f" {src.name} cannot reach anything on {net.name}"
            f" (fix: {_host_cmd(ctx)} link set {host_if} up)",
            **dd,
        )
        return True
    if peer.get("master") != net.bridge:
        where = f"attached to {peer['master']}" if peer.get("master") else "on no bridge"
        ctx.report.add(
            "veth",
            "fail",
            f"the host end {host_if} of {who} is {where}, not on bridge {net.bridge} of network"
            f" {net.name} (fix: {_host_cmd(ctx)} link set {host_if} master {net.bridge})",
            **dd,
        )
        return True
    ctx.report.add("veth", "ok", f"{who}'s host end {host_if} is up on bridge {net.bridge}", **dd)
    return False


def read_source(ctx: Context, ref: str) -> Source | None:
    """A target container's namespace (no findings about it unless it is not running)."""
    c = running(ctx, ref, "target")
    if c is None:
        return None
    try:
        return load(ctx, c)
    except EngineError as e:
        ctx.report.add("container", "fail", f"cannot read {c.name}'s namespace: {e}")
        return None
