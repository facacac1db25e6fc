"""Bridges, veth pairs and macvlan/ipvlan links, made with iproute2's `ip`.

DESIGN.md names pyroute2 for this; we use `ip -n NS -batch -` instead on the
hot path because importing pyroute2 costs ~130 ms in every `berth run` (it
pulls in ndb/ipdb), while one `ip` batch per namespace costs ~2-3 ms. Every
change still happens through netlink in the named namespace, never by
setns() in our process. Every function tolerates "already done" so a retried
or interrupted start heals.
"""

from __future__ import annotations

import hashlib
import subprocess

from engine.errors import EngineError


def _ip(
    netns: str, *args: str, batch: list[str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    if batch is not None:
        cmd += ["-batch", "-"]
    p = subprocess.run(
        cmd, input="\n".join(batch) + "\n" if batch else None, capture_output=True, text=True
    )
    if check and p.returncode != 0:
        raise EngineError(_error_text(p.stderr) or f"ip {' '.join(args)} failed ({p.returncode})")
    return p


def _error_text(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    # ip -batch says "Command failed -:N" after the real message: keep the message.
    lines = [ln for ln in lines if not ln.startswith("Command failed")]
    return lines[0] if lines else ""


def link_kind(host_netns: str, name: str) -> str | None:
    """The link's kind ("bridge", "veth", "" for a plain device), None if absent."""
    import json

    p = _ip(host_netns, "-j", "-d", "link", "show", "dev", name, check=False)
    if p.returncode != 0:
        return None
    info = (json.loads(p.stdout or "[{}]")[0] or {}).get("linkinfo") or {}
    return info.get("info_kind", "")


def remove_address(host_netns: str, name: str, cidr: str) -> None:
    _ip(host_netns, "addr", "del", cidr, "dev", name, check=False)


def link_exists(host_netns: str, name: str) -> bool:
    return _ip(host_netns, "-o", "link", "show", "dev", name, check=False).returncode == 0


def host_ifname(prefix: str, container_id: str, network_id: str) -> str:
    """A stable, unique name <= 15 chars for the host end of a veth."""
    h = hashlib.sha256(f"{container_id}:{network_id}".encode()).hexdigest()
    return f"{prefix}{h[: 15 - len(prefix) - 1]}"[:14] + "v"


def bridge_mac(name: str) -> str:
    """A bridge without its own MAC takes the lowest of its ports', so it would
    change as containers join and break their cached gateway ARP entry; pin a
    stable locally administered one (as Docker does)."""
    h = hashlib.sha256(name.encode()).digest()
    return "02:42:" + ":".join(f"{b:02x}" for b in h[:4])


def ensure_bridge(host_netns: str, name: str, gateway: str, prefixlen: int, mtu: int = 0) -> bool:
    """Create the bridge with the gateway address and bring it up; True if created."""
    p = _ip(host_netns, "-o", "-4", "addr", "show", "dev", name, check=False)
    if p.returncode == 0:
        if gateway and f" {gateway}/{prefixlen} " not in p.stdout:
            _ip(host_netns, "addr", "replace", f"{gateway}/{prefixlen}", "dev", name)
        if "UP" not in _ip(host_netns, "-o", "link", "show", "dev", name).stdout.split(">")[0]:
            _ip(host_netns, "link", "set", name, "up")
        return False
    cmds = [f"link add {name} type bridge", f"link set {name} address {bridge_mac(name)}"]
    if mtu:
        cmds.append(f"link set {name} mtu {mtu}")
    if gateway:
        cmds.append(f"addr add {gateway}/{prefixlen} dev {name}")
    cmds.append(f"link set {name} up")
    p = _ip(host_netns, batch=cmds, check=False)
    if p.returncode != 0:
        if "exists" in p.stderr:  # a concurrent start made it: fine
            return False
        delete_link(host_netns, name)
        raise EngineError(f"cannot create bridge {name}: {_error_text(p.stderr)}")
    return True


def vlan_parent(name: str) -> tuple[str, int] | None:
    """``eth0.10`` -> ("eth0", 10): a parent named as Docker names 802.1q sub-interfaces."""
    base, dot, vid = name.rpartition(".")
    if dot and base and vid.isdigit() and 1 <= int(vid) <= 4094:
        return base, int(vid)
    return None


def ensure_vlan(host_netns: str, name: str) -> bool:
    """Create the 802.1q sub-interface ``base.VID`` if absent and bring it up (Docker
    does this for ``-o parent=eth0.10``); True if we made it."""
    split = vlan_parent(name)
    if split is None or link_exists(host_netns, name):
        return False
    base, vid = split
    if len(name) > 15:
        raise EngineError(f"parent interface name {name} is longer than 15 characters")
    p = _ip(host_netns, batch=[f"link add link {base} name {name} type vlan id {vid}",
                               f"link set {name} up"], check=False)  # fmt: skip
    if p.returncode != 0:
        link_exists(host_netns, name) and delete_link(host_netns, name)
        err = _error_text(p.stderr)
        if "Unknown device type" in err:
            err = "this kernel has no 802.1q VLAN support (module 8021q)"
        raise EngineError(f"cannot create VLAN interface {name} on {base}: {err}")
    return True


def delete_link(host_netns: str, name: str) -> bool:
    """Delete a link (bridge or veth end); False if it was not there."""
    p = _ip(host_netns, "link", "del", name, check=False)
    if p.returncode == 0:
        return True
    if "Cannot find device" in p.stderr or "does not exist" in p.stderr:
        return False
    raise EngineError(f"cannot delete link {name}: {_error_text(p.stderr)}")


def _inside(
    ifname: str, mac: str, ip: str, prefixlen: int, gateway: str, default_route: bool, tmp: str
) -> list[str]:
    """Commands, run in the container's netns, that rename and configure the arrived link."""
    cmds = [f"link set {tmp} name {ifname}"]
    if mac:
        cmds.append(f"link set {ifname} address {mac}")
    cmds += [f"addr add {ip}/{prefixlen} dev {ifname}", f"link set {ifname} up"]
    if default_route and gateway:
        cmds.append(f"route replace default via {gateway} dev {ifname}")
    return cmds


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
    bridge_prefixlen: int | None = None,
) -> None:
    """One veth pair: host end on the bridge, the other end as ``ifname`` in the container.

    The container's end is made right inside its namespace, under its final name
    and MAC: moving a link between namespaces afterwards costs the kernel RCU
    grace periods (~15 ms here), creating it there does not.

    With ``bridge_prefixlen``, the bridge is healed on the way, as ensure_bridge()
    would (the gateway address, up), in the same `ip` batch: one process fewer per
    start. Only when the bridge is missing altogether is it made first.
    """
    heal: list[str] = []
    if bridge_prefixlen is not None:
        # Both idempotent, and what ensure_bridge does to an existing bridge (also
        # to a pre-existing one of the user's: its MAC and MTU stay as they are).
        if gateway:
            heal.append(f"addr replace {gateway}/{bridge_prefixlen} dev {bridge}")
        heal.append(f"link set {bridge} up")
    mtu_opt = f" mtu {mtu}" if mtu else ""
    mac_opt = f" address {mac}" if mac else ""
    cmds = [
        *heal,
        f"link add {host_if}{mtu_opt} type veth"
        f" peer name {ifname}{mac_opt}{mtu_opt} netns {container_netns}",
        f"link set {host_if} master {bridge}",
        # Hairpin: a container reaching its own published port through the
        # host's address comes back in on the same bridge port.
        f"link set {host_if} type bridge_slave hairpin on",
        f"link set {host_if} up",
    ]
    p = _ip(host_netns, batch=cmds, check=False)
    if p.returncode != 0 and heal and f'Cannot find device "{bridge}"' in p.stderr:
        # The bridge is gone (host reboot, someone deleted it): make it, then plug in.
        # The batch stopped at its first line, before any veth was made.
        ensure_bridge(host_netns, bridge, gateway, bridge_prefixlen or 0, mtu)
        p = _ip(host_netns, batch=cmds, check=False)
    if p.returncode != 0 and "exists" in p.stderr:
        # Left over from an interrupted start: replace it (its peer goes with it;
        # the second name is the host-side peer name older versions used).
        delete_link(host_netns, host_if)
        delete_link(host_netns, host_if[:-1] + "p")
        p = _ip(host_netns, batch=cmds, check=False)
    if p.returncode != 0:
        delete_link(host_netns, host_if)
        raise EngineError(f"cannot create veth {host_if} on {bridge}: {_error_text(p.stderr)}")
    inside = [f"addr add {ip}/{prefixlen} dev {ifname}", f"link set {ifname} up"]
    if default_route and gateway:
        inside.append(f"route replace default via {gateway} dev {ifname}")
    p = _ip(container_netns, batch=inside, check=False)
    if p.returncode != 0:
        delete_link(host_netns, host_if)
        raise EngineError(
            f"cannot configure {ifname} in {container_netns}: {_error_text(p.stderr)}"
        )


def delete_links_begin(host_netns: str, names: list[str]) -> subprocess.Popen | None:
    """Start deleting links in one `ip` batch and return at once.

    Deleting a veth costs the kernel ~15-20 ms of RCU waits; teardown overlaps
    that with its other steps and then calls delete_links_end().
    """
    if not names:
        return None
    cmd = ["ip", *(["-n", host_netns] if host_netns else []), "-force", "-batch", "-"]
    p = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    p.stdin.write("".join(f"link del {n}\n" for n in names))  # type: ignore[union-attr]
    p.stdin.close()  # type: ignore[union-attr]
    return p


def delete_links_end(p: subprocess.Popen | None, names: list[str]) -> list[str]:
    """Wait for delete_links_begin(); returns the names that were deleted.

    Raises like delete_link() when one could not be deleted for another reason
    than not being there."""
    if p is None:
        return []
    err = p.stderr.read() if p.stderr else ""
    p.wait()
    if p.stderr:
        p.stderr.close()
    gone = set()
    # With -force ip goes on after a failed line and reports each one as
    # "<message>\nCommand failed -:<line>".
    lines = err.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("Command failed -:"):
            n = int(ln.rsplit(":", 1)[1]) - 1
            msg = lines[i - 1] if i else ""
            if "Cannot find device" in msg or "does not exist" in msg:
                gone.add(n)
                continue
            raise EngineError(f"cannot delete link {names[n]}: {msg.strip()}")
    if p.returncode != 0 and not gone:
        raise EngineError(f"cannot delete links {', '.join(names)}: {_error_text(err)}")
    return [n for i, n in enumerate(names) if i not in gone]


def detach_in_container(container_netns: str, ifname: str) -> None:
    delete_link(container_netns, ifname)


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
    if not link_exists(host_netns, parent):
        raise EngineError(f"parent interface {parent} does not exist in the host namespace")
    delete_link(host_netns, tmp_name)  # left over from an interrupted start
    mode = mode or ("bridge" if kind == "macvlan" else "l2")
    p = _ip(host_netns, batch=[f"link add {tmp_name} link {parent} type {kind} mode {mode}",
                               f"link set {tmp_name} netns {container_netns}"], check=False)  # fmt: skip
    if p.returncode != 0:
        delete_link(host_netns, tmp_name)
        err = _error_text(p.stderr)
        if "Unknown device type" in err or "not supported" in err.lower():
            raise EngineError(
                f"cannot create {kind} link on {parent}: this kernel has no {kind} support"
            )
        raise EngineError(f"cannot create {kind} link on {parent}: {err}")
    # ipvlan links share the parent's MAC: only macvlan gets ours.
    cmds = _inside(
        ifname, mac if kind == "macvlan" else "", ip, prefixlen, gateway, default_route, tmp_name
    )
    p = _ip(container_netns, batch=cmds, check=False)
    if p.returncode != 0:
        delete_link(container_netns, tmp_name)
        raise EngineError(
            f"cannot configure {ifname} in {container_netns}: {_error_text(p.stderr)}"
        )
