"""Bridges and veth pairs, through pyroute2's per-namespace netlink sockets.

Everything happens in the engine's "host" network namespace (the real host,
or a named netns when EngineConfig.host_netns is set) and in the container's
own namespace; we never setns() in our own process (DESIGN.md). Every
function tolerates "already done" so a retried or interrupted start heals.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

from engine.errors import EngineError


@contextmanager
def _ipr(netns: str = ""):
    from pyroute2 import IPRoute

    ipr = IPRoute(netns=netns) if netns else IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _index(ipr, name: str) -> int | None:
    idx = ipr.link_lookup(ifname=name)
    return idx[0] if idx else None


def link_exists(host_netns: str, name: str) -> bool:
    with _ipr(host_netns) as ipr:
        return _index(ipr, name) is not None


def host_ifname(prefix: str, container_id: str, network_id: str) -> str:
    """A stable, unique name <= 15 chars for the host end of a veth."""
    h = hashlib.sha256(f"{container_id}:{network_id}".encode()).hexdigest()
    return f"{prefix}{h[: 15 - len(prefix) - 1]}"[:14] + "v"


def ensure_bridge(host_netns: str, name: str, gateway: str, prefixlen: int, mtu: int = 0) -> bool:
    """Create the bridge with the gateway address and bring it up; True if created."""
    created = False
    with _ipr(host_netns) as ipr:
        idx = _index(ipr, name)
        if idx is None:
            try:
                ipr.link("add", ifname=name, kind="bridge")
            except Exception as e:  # NetlinkError: EEXIST on a race is fine
                if "exist" not in str(e).lower():
                    raise EngineError(f"cannot create bridge {name}: {e}") from None
            idx = _index(ipr, name)
            created = True
            # A bridge without its own MAC takes the lowest of its ports', so it
            # would change as containers join and break their cached gateway ARP
            # entry; pin a stable locally administered one (as Docker does).
            h = hashlib.sha256(name.encode()).digest()
            ipr.link("set", index=idx, address="02:42:" + ":".join(f"{b:02x}" for b in h[:4]))
        if mtu:
            ipr.link("set", index=idx, mtu=mtu)
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
        if gateway and gateway not in have:
            ipr.addr("add", index=idx, address=gateway, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")
    return created


def delete_link(host_netns: str, name: str) -> bool:
    """Delete a link (bridge or veth end); False if it was not there."""
    with _ipr(host_netns) as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return False
        try:
            ipr.link("del", index=idx)
        except Exception as e:
            if "no such" not in str(e).lower():
                raise EngineError(f"cannot delete link {name}: {e}") from None
        return True


def attach_veth(
    host_netns: str,
    bridge: str,
    host_if: str,
    container_netns: str,
    ifname: str,
    ip: str,
    prefixlen: int,
    gateway: str,
    mac: str,
    mtu: int = 0,
    default_route: bool = True,
) -> None:
    """One veth pair: host end on the bridge, the other end as ``ifname`` in the container."""
    peer_tmp = host_if[:-1] + "p"
    with _ipr(host_netns) as ipr:
        for stale in (host_if, peer_tmp):
            idx = _index(ipr, stale)
            if idx is not None:
                ipr.link("del", index=idx)
        try:
            ipr.link("add", ifname=host_if, kind="veth", peer=peer_tmp)
        except Exception as e:
            raise EngineError(f"cannot create veth {host_if}: {e}") from None
        try:
            hidx = _index(ipr, host_if)
            pidx = _index(ipr, peer_tmp)
            br = _index(ipr, bridge)
            if br is None:
                raise EngineError(f"bridge {bridge} does not exist")
            if mtu:
                ipr.link("set", index=hidx, mtu=mtu)
                ipr.link("set", index=pidx, mtu=mtu)
            ipr.link("set", index=hidx, master=br)
            # Hairpin: a container reaching its own published port through the
            # host's address comes back in on the same bridge port.
            ipr.brport("set", index=hidx, mode=1)
            ipr.link("set", index=hidx, state="up")
            ipr.link("set", index=pidx, net_ns_fd=container_netns)
        except BaseException:
            idx = _index(ipr, host_if)
            if idx is not None:
                ipr.link("del", index=idx)
            raise
    _configure_inside(container_netns, peer_tmp, ifname, mac, ip, prefixlen, gateway, default_route)


def _configure_inside(
    container_netns: str,
    tmp_name: str,
    ifname: str,
    mac: str,
    ip: str,
    prefixlen: int,
    gateway: str,
    default_route: bool,
) -> None:
    """Rename the arrived link, give it its MAC and address, bring it up, route."""
    with _ipr(container_netns) as nsr:
        idx = _index(nsr, tmp_name)
        if idx is None:
            raise EngineError(f"link {tmp_name} did not arrive in {container_netns}")
        nsr.link("set", index=idx, ifname=ifname)
        if mac:
            nsr.link("set", index=idx, address=mac)
        nsr.addr("add", index=idx, address=ip, prefixlen=prefixlen)
        nsr.link("set", index=idx, state="up")
        if default_route and gateway:
            try:
                nsr.route("add", dst="0.0.0.0/0", gateway=gateway)
            except Exception as e:
                if "exist" not in str(e).lower():
                    raise EngineError(f"cannot add default route via {gateway}: {e}") from None


def detach_in_container(container_netns: str, ifname: str) -> None:
    with _ipr(container_netns) as nsr:
        idx = _index(nsr, ifname)
        if idx is not None:
            nsr.link("del", index=idx)


# ipvlan modes as the kernel numbers them (IPVLAN_MODE_L2/L3/L3S).
_IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}


def attach_sublink(
    host_netns: str,
    kind: str,
    parent: str,
    tmp_name: str,
    container_netns: str,
    ifname: str,
    ip: str,
    prefixlen: int,
    gateway: str,
    mode: str = "",
    mac: str = "",
    default_route: bool = True,
) -> None:
    """A macvlan or ipvlan link on ``parent`` (in the host netns), moved into the
    container as ``ifname``. Containers on it sit directly on the parent's LAN."""
    with _ipr(host_netns) as ipr:
        pidx = _index(ipr, parent)
        if pidx is None:
            raise EngineError(f"parent interface {parent} does not exist in the host namespace")
        stale = _index(ipr, tmp_name)
        if stale is not None:
            ipr.link("del", index=stale)
        try:
            if kind == "macvlan":
                ipr.link(
                    "add", ifname=tmp_name, kind="macvlan", link=pidx, macvlan_mode=mode or "bridge"
                )
            else:
                ipr.link(
                    "add",
                    ifname=tmp_name,
                    kind="ipvlan",
                    link=pidx,
                    ipvlan_mode=_IPVLAN_MODES[mode or "l2"],
                )
        except Exception as e:
            if "not supported" in str(e).lower():
                raise EngineError(
                    f"cannot create {kind} link on {parent}: this kernel has no {kind} support"
                ) from None
            raise EngineError(f"cannot create {kind} link on {parent}: {e}") from None
        idx = _index(ipr, tmp_name)
        try:
            ipr.link("set", index=idx, net_ns_fd=container_netns)
        except BaseException:
            ipr.link("del", index=idx)
            raise
    # ipvlan links share the parent's MAC: only macvlan gets ours.
    _configure_inside(container_netns, tmp_name, ifname, mac if kind == "macvlan" else "", ip, prefixlen,
                      gateway, default_route)  # fmt: skip
