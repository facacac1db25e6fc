"""IP address management: subnets for networks, addresses for endpoints.

Subnets: an explicit ``--subnet`` is validated and must not overlap another
network of this engine; otherwise the first subnet of Docker's default pools
(172.17.0.0/16 ... 172.31.0.0/16, then 192.168.0.0/16 in /20 steps) that
overlaps neither another network of this engine nor a route of the engine's
host (a VPN's route, a LAN) is chosen. Routes are read from the host netns the
engine was given (``ip -n NS -j route``) so a test engine sees its own "host".

Addresses: ``allocate`` picks the lowest free address and inserts the endpoint
row in ONE ``BEGIN IMMEDIATE`` transaction. The write lock serialises
allocators across processes, and ``UNIQUE(network_id, ip)`` would refuse a
duplicate even if that were ever bypassed, so N concurrent starts on one
network get N distinct addresses without any file lock. Lowest-free (rather
than Docker's rolling allocator) keeps addresses small and predictable; the
MAC is derived from the IP, so a reused address comes back with the same MAC
and neighbours' ARP caches stay right.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network

from engine.errors import Conflict, HostNotReady, InvalidArgument, NotFound, Unsupported
from engine.network import store
from engine.network.store import Endpoint, NetworkRecord
from engine.state import StateDB, dumps

DEFAULT_BRIDGE_SUBNET = IPv4Network("172.17.0.0/16")
# Docker's default address pools (moby ipamutils): (base, size of each subnet).
DEFAULT_POOLS: tuple[tuple[IPv4Network, int], ...] = (
    *((IPv4Network(f"172.{n}.0.0/16"), 16) for n in range(17, 32)),
    (IPv4Network("192.168.0.0/16"), 20),
)


# -- parsing and validation ------------------------------------------------------------


def parse_subnet(text: str, what: str = "subnet") -> IPv4Network:
    """A CIDR with no host bits set, as Docker insists ("it should be 10.1.0.0/16")."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}: not a CIDR (e.g. 10.1.0.0/16)") from None
    if net.version != 4:
        raise Unsupported(f"IPv6 {what} {text}: IPv6 networks are not supported yet")
    if "/" not in text:
        raise InvalidArgument(f"invalid {what} {text!r}: a prefix length is required")
    if str(net) != text.strip():
        raise InvalidArgument(f"invalid {what} {text}: it should be {net}")
    assert isinstance(net, IPv4Network)
    return net


def parse_address(text: str, what: str = "IP address") -> IPv4Address:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}") from None
    if addr.version != 4:
        raise Unsupported(f"IPv6 {what} {text}: IPv6 is not supported yet")
    assert isinstance(addr, IPv4Address)
    return addr


def _overlapping(net: IPv4Network, networks: Iterable[NetworkRecord]) -> NetworkRecord | None:
    for rec in networks:
        if rec.subnet and IPv4Network(rec.subnet).overlaps(net):
            return rec
    return None


def candidate_subnets() -> Iterator[IPv4Network]:
    for base, size in DEFAULT_POOLS:
        yield from base.subnets(new_prefix=size)


def choose_subnet(
    networks: Iterable[NetworkRecord],
    routes: Iterable[IPv4Network],
    preferred: IPv4Network | None = None,
) -> IPv4Network:
    """``preferred`` if it is free, else the first free subnet of the default pools."""
    taken = [IPv4Network(r.subnet) for r in networks if r.subnet]
    busy = [*taken, *routes]
    for cand in ([preferred] if preferred else []) + list(candidate_subnets()):
        if not any(cand.overlaps(b) for b in busy):
            return cand
    raise Conflict(
        "could not find an available, non-overlapping IPv4 address pool among the defaults"
        " to assign to the network (every pool overlaps a network or a host route)"
    )


def plan_addresses(
    networks: list[NetworkRecord],
    routes: list[IPv4Network],
    subnet: str | None,
    gateway: str | None,
    ip_range: str | None,
    preferred: IPv4Network | None = None,
) -> tuple[str, str, str]:
    """Validated (subnet, gateway, ip_range) strings for a new network."""
    if not subnet and (gateway or ip_range):
        raise InvalidArgument("every ip-range or gateway must have a corresponding subnet")
    if subnet:
        net = parse_subnet(subnet)
        other = _overlapping(net, networks)
        if other is not None:
            raise Conflict(
                f"invalid pool request: subnet {net} overlaps with network {other.name}"
                f" ({other.subnet})",
                obj=other.name,
            )
    else:
        net = choose_subnet(networks, routes, preferred)
    if net.prefixlen > 30:
        raise InvalidArgument(f"subnet {net} is too small: it needs room for a gateway and hosts")
    if gateway:
        gw = parse_address(gateway, "gateway")
        if gw not in net:
            raise InvalidArgument(f"gateway {gw} is not in subnet {net}")
        if gw in (net.network_address, net.broadcast_address):
            raise InvalidArgument(f"gateway {gw} is the network or broadcast address of {net}")
    else:
        gw = net.network_address + 1
    rng = ""
    if ip_range:
        r = parse_subnet(ip_range, "ip-range")
        if not r.subnet_of(net):
            raise InvalidArgument(f"ip-range {r} is not inside subnet {net}")
        rng = str(r)
    return str(net), str(gw), rng


# -- host routes -----------------------------------------------------------------------


def parse_routes(text: str) -> list[IPv4Network]:
    """Destinations of ``ip -j -4 route`` output (the default route is not a subnet)."""
    out: list[IPv4Network] = []
    for entry in json.loads(text or "[]"):
        dst = entry.get("dst", "")
        if not dst or dst == "default":
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)  # "10.1.2.3" is a /32
        except ValueError:
            continue
        if isinstance(net, IPv4Network) and net.prefixlen > 0:
            out.append(net)
    return out


def host_routes(host_netns: str = "") -> list[IPv4Network]:
    """IPv4 route destinations of the engine's host (its named netns, or the real host)."""
    cmd = ["ip", *(["-n", host_netns] if host_netns else []), "-j", "-4", "route", "show"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise HostNotReady("the `ip` command (Debian package iproute2) is missing") from None
    if p.returncode != 0:
        where = f"network namespace {host_netns}" if host_netns else "the host"
        raise HostNotReady(f"cannot read the routes of {where}: {p.stderr.strip()}")
    return parse_routes(p.stdout)


# -- endpoints -------------------------------------------------------------------------


def mac_for(ip: str) -> str:
    """Docker's MAC for an address: 02:42 then the four bytes of the IPv4 address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in IPv4Address(ip).packed)


def _pool(rec: NetworkRecord) -> tuple[IPv4Network, IPv4Network, set[int]]:
    """(subnet, allocation range, reserved addresses as ints) of a network."""
    net = IPv4Network(rec.subnet)
    rng = IPv4Network(rec.ip_range) if rec.ip_range else net
    reserved = {int(net.network_address), int(net.broadcast_address)}
    if rec.gateway:
        reserved.add(int(IPv4Address(rec.gateway)))
    return net, rng, reserved


def _check_static(rec: NetworkRecord, requested: str, used: dict[int, str]) -> str:
    addr = parse_address(requested)
    net, _rng, _reserved = _pool(rec)
    # Like Docker, a static address only needs to be in the subnet: --ip-range is the
    # dynamic part, and keeping static ones outside it is what it is for.
    if addr not in net:
        raise InvalidArgument(
            f"no configured subnet or ip-range contain the IP address {addr}"
            f" (network {rec.name} is {net})",
            obj=str(addr),
        )
    if addr in (net.network_address, net.broadcast_address):
        raise InvalidArgument(
            f"IP address {addr} is the network or broadcast address of {rec.name} ({net})",
            obj=str(addr),
        )
    if rec.gateway and addr == IPv4Address(rec.gateway):
        raise Conflict(
            f"IP address {addr} is already in use on network {rec.name} (by the gateway)",
            obj=str(addr),
        )
    if int(addr) in used:
        raise Conflict(
            f"IP address {addr} is already in use on network {rec.name}"
            f" (by container {used[int(addr)][:12]})",
            obj=str(addr),
        )
    return str(addr)


def _first_free(rec: NetworkRecord, used: dict[int, str]) -> str:
    _net, rng, reserved = _pool(rec)
    for n in range(int(rng.network_address), int(rng.broadcast_address) + 1):
        if n not in used and n not in reserved:
            return str(IPv4Address(n))
    raise Conflict(
        f"no available IPv4 addresses on network {rec.name} ({rec.ip_range or rec.subnet} is full)",
        obj=rec.name,
    )


def _next_ifname(conn: sqlite3.Connection, container_id: str) -> str:
    rows = conn.execute(
        "SELECT ifname FROM endpoints WHERE container_id=?", (container_id,)
    ).fetchall()
    have = {r["ifname"] for r in rows}
    n = 0
    while f"eth{n}" in have:
        n += 1
    return f"eth{n}"


def _host_ifname(conn: sqlite3.Connection, prefix: str, network_id: str, cid: str) -> str:
    """``<prefix>v<hash>`` (<= 15 chars), unique among this engine's endpoints."""
    width = 15 - len(prefix) - 1
    for salt in range(1000):
        h = hashlib.sha256(f"{network_id}:{cid}:{salt}".encode()).hexdigest()[:width]
        name = f"{prefix}v{h}"
        taken = conn.execute("SELECT 1 FROM endpoints WHERE host_ifname=?", (name,)).fetchone()
        if taken is None:
            return name
    raise Conflict(f"no free host interface name for prefix {prefix}")  # pragma: no cover


def allocate(
    db: StateDB,
    network: NetworkRecord,
    container_id: str,
    requested_ip: str | None = None,
    aliases: Iterable[str] = (),
    prefix: str = "",
) -> Endpoint:
    """Reserve an address on ``network`` for the container and record its endpoint.

    One BEGIN IMMEDIATE transaction reads the used addresses and inserts the row,
    so concurrent callers (threads or processes, each with its own connection) get
    distinct addresses. ``prefix`` (the engine's) names the host end of the veth on
    bridge networks. Networks without a subnet (host, none) get an address-less row.
    """
    store.ensure_schema(db)  # outside the transaction: executescript would commit it
    with db.write() as conn:
        if conn.execute("SELECT 1 FROM networks WHERE id=?", (network.id,)).fetchone() is None:
            raise NotFound(f"network {network.name} not found", obj=network.name)
        dup = conn.execute(
            "SELECT 1 FROM endpoints WHERE network_id=? AND container_id=?",
            (network.id, container_id),
        ).fetchone()
        if dup is not None:
            raise Conflict(
                f"endpoint for container {container_id[:12]} already exists in network"
                f" {network.name}",
                obj=container_id,
            )
        ip = mac = host_ifname = ""
        if network.subnet:
            rows = conn.execute(
                "SELECT ip, container_id FROM endpoints WHERE network_id=? AND ip IS NOT NULL",
                (network.id,),
            ).fetchall()
            used = {int(IPv4Address(r["ip"])): r["container_id"] for r in rows}
            if requested_ip:
                ip = _check_static(network, requested_ip, used)
            else:
                ip = _first_free(network, used)
            mac = mac_for(ip)
        if network.driver == "bridge" and prefix:
            host_ifname = _host_ifname(conn, prefix, network.id, container_id)
        ep = Endpoint(
            network_id=network.id,
            container_id=container_id,
            ip=ip,
            mac=mac,
            ifname=_next_ifname(conn, container_id) if network.subnet else "",
            host_ifname=host_ifname,
            aliases=list(dict.fromkeys(aliases)),
        )
        conn.execute(
            "INSERT INTO endpoints(network_id, container_id, ip, mac, ifname, host_ifname,"
            " aliases) VALUES (?,?,?,?,?,?,?)",
            (
                ep.network_id,
                ep.container_id,
                ep.ip or None,  # NULLs are distinct under UNIQUE: many address-less rows
                ep.mac,
                ep.ifname,
                ep.host_ifname,
                dumps(ep.aliases),
            ),
        )
    return ep


def release(db: StateDB, network_id: str, container_id: str) -> Endpoint | None:
    """Forget the container's endpoint (and so free its address); None if it had none.

    Safe to repeat: releasing twice is not an error (cleanup paths retry).
    """
    store.ensure_schema(db)
    with db.write() as conn:
        row = conn.execute(
            "SELECT * FROM endpoints WHERE network_id=? AND container_id=?",
            (network_id, container_id),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "DELETE FROM endpoints WHERE network_id=? AND container_id=?",
            (network_id, container_id),
        )
    return store.endpoint_from_row(row)
