"""The network doctor's published-ports check (plugs into engine.network.doctor).

For each published port of a running container (``c.extra["ports"]``, DNAT'd to
``c.extra["port_target"]``) it asks the kernel, not Berth's records:

- dnat: are the DNAT rules that ports.port_specs + nft.render would write for
  this port in the kernel's table (``nft -j list table``)? prerouting carries
  traffic from outside and from other containers, output the host's own;
- listening: does something inside the container listen on the container port
  (``/proc/PID/net/tcp`` or ``udp`` of the container's process: its namespace)?
- host-port: is the host port still held by the port keeper (it answers
  ``held``, and the kernel shows its socket), and if not, who has it now?
- route-localnet: a ``127.0.0.1:`` binding (or an every-address one, which
  answers on 127.0.0.1 too) needs ``route_localnet`` on the bridge, or the
  kernel drops the DNAT'd packet with its loopback source as martian.

Every finding's check is ``published-ports``; ``details["what"]`` says which
of the four it is, ``details["port"]`` the container side ("80/tcp").
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.errors import EngineError, NotFound
from engine.network import doctor
from engine.network.doctor import Context, Finding, Status

__all__ = ["CHECK", "check_published_ports"]

CHECK = "published-ports"
TCP_LISTEN = "0A"  # st column of /proc/net/tcp
# Which chain carries which traffic, for the reader of a missing-rule finding.
_CHAIN_ROLE = {
    "prerouting": "from outside and from other containers",
    "output": "from the host itself, 127.0.0.1 included",
}


@dataclass(frozen=True)
class Sock:
    """One socket of the host namespace as /proc/net shows it."""

    proto: str  # "tcp" | "udp"
    addr: str  # "0.0.0.0", "127.0.0.1", "::" ...
    port: int
    inode: int


# -- reading sockets ---------------------------------------------------------------------


def _hex_addr(h: str) -> str:
    raw = bytes.fromhex(h)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc prints an IPv6 address as four host-order 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    v6 = ipaddress.IPv6Address(words)
    return str(v6.ipv4_mapped) if v6.ipv4_mapped else str(v6)


def _read_proc_net(base: str, protos: Iterable[str]) -> list[tuple[str, str, int, str, int]]:
    """(proto, local address, port, state, inode) of every socket in ``base``
    (``/proc/net`` or ``/proc/PID/net``: the namespace of that process)."""
    out: list[tuple[str, str, int, str, int]] = []
    for proto in protos:
        for fname in (proto, proto + "6"):
            try:
                with open(f"{base}/{fname}") as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                cols = line.split()
                if len(cols) < 10:
                    continue
                addr, _, hport = cols[1].partition(":")
                out.append((proto, _hex_addr(addr), int(hport, 16), cols[3], int(cols[9])))
    return out


def _bound(rows: list[tuple[str, str, int, str, int]], proto: str, port: int) -> list[Sock]:
    """Sockets that own ``port``: TCP listeners, or any UDP socket bound to it
    (an unconnected UDP socket has no LISTEN state)."""
    return [
        Sock(p, a, pt, ino)
        for p, a, pt, st, ino in rows
        if p == proto and pt == port and (proto == "udp" or st == TCP_LISTEN)
    ]


def container_listeners(pid: int, proto: str, port: int) -> list[str]:
    """Addresses a socket inside the container (the namespace of ``pid``) listens
    on for ``port``; for TCP the same answer as doctor_target.listeners."""
    rows = _read_proc_net(f"/proc/{pid}/net", [proto])
    return sorted({s.addr for s in _bound(rows, proto, port)})


def _host_rows(host_netns: str) -> list[tuple[str, str, int, str, int]]:
    """Every TCP/UDP socket of the engine's host namespace.

    /proc/net follows the namespace of the reading process, so a child that
    setns()es there (run_in_netns) reads what `ss -ltun` on that host would show.
    """
    if not host_netns:
        return _read_proc_net("/proc/net", ("tcp", "udp"))
    from engine.netns import netns_path, run_in_netns

    return run_in_netns(netns_path(host_netns), lambda: _read_proc_net("/proc/net", ("tcp", "udp")))


def _owners(inodes: set[int]) -> dict[int, tuple[int, str]]:
    """Socket inode -> (pid, comm) of a process holding it: one pass over /proc
    (socket inodes are global, so this works from any namespace)."""
    found: dict[int, tuple[int, str]] = {}
    if not inodes:
        return found
    wanted = {f"socket:[{i}]": i for i in inodes}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                ino = wanted.get(os.readlink(f"/proc/{entry}/fd/{fd}"))
            except OSError:
                continue
            if ino is not None and ino not in found:
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    comm = "?"
                found[ino] = (int(entry), comm)
        if len(found) == len(inodes):
            break
    return found


def _overlaps(a: str, b: str) -> bool:
    """Would sockets bound to addresses ``a`` and ``b`` (same port) clash?"""
    wild = ("0.0.0.0", "::")
    return a == b or a in wild or b in wild


# -- the check ---------------------------------------------------------------------------


def _label(r: Any) -> str:
    """Docker's ps form: 127.0.0.1:18080->80/tcp."""
    return f"{r.host_ip or '0.0.0.0'}:{r.host_port}->{r.container_port}/{r.proto}"


def _targets(ctx: Context, container: Any) -> list[Any]:
    """The containers to check: the given one, or every running one with ports."""
    from engine.containers import records

    if container is not None:
        return [container] if container.extra.get("ports") else []
    return [
        c
        for c in records.load_all(ctx.eng.db)
        if c.state in records.ACTIVE and c.pid and c.extra.get("ports")
    ]


class _Checker:
    """State shared by the ports of one diagnose (read once: rules, sockets, keeper)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.out: list[Finding] = []
        self.listing = self._listing()
        self.rows: list[tuple[str, str, int, str, int]] | None = None
        self.rows_error = ""
        try:
            self.rows = _host_rows(ctx.host_netns)
        except EngineError as e:
            self.rows_error = str(e)
        self.keeper_pid, self.held, self.keeper_error = self._keeper()
        self.owners: dict[int, tuple[int, str]] = {}

    def find_owners(self, wanted: set[tuple[str, int]]) -> None:
        """Who holds the sockets on these (proto, host port)s: one /proc scan for all."""
        if self.rows:
            inodes = {ino for p, _, pt, _, ino in self.rows if ino and (p, pt) in wanted}
            self.owners = _owners(inodes)

    def add(self, status: Status, message: str, **details: Any) -> None:
        self.out.append(Finding(CHECK, status, message, details))

    def _listing(self) -> dict[str, Any] | None:
        from engine.network import nft

        if self.ctx.nft is not None:
            return self.ctx.nft  # check_firewall read it already
        try:
            return nft.list_rules(self.ctx.host_netns, self.ctx.prefix)
        except EngineError:
            return None

    def _keeper(self) -> tuple[int | None, dict[str, list[str]], str]:
        from engine import helpers
        from engine.network import ports

        try:
            h = helpers.running(self.ctx.eng, ports.KEEPER)
            return (h.pid if h else None), (ports.held(self.ctx.eng) if h else {}), ""
        except EngineError as e:
            return None, {}, str(e)

    # -- one container -----------------------------------------------------------------

    def container(self, c: Any) -> None:
        from engine.network import ports

        reserved = [ports.Reserved.from_dict(d) for d in c.extra.get("ports") or []]
        target = c.extra.get("port_target") or {}
        net = next((n for n in self.ctx.networks if n.bridge == target.get("bridge")), None)
        base = {"container": c.name, "network": net.name if net else None}
        if not target.get("ip") or not target.get("bridge"):
            self.add(
                "fail",
                f"{c.name} publishes {', '.join(_label(r) for r in reserved)} but Berth recorded"
                " no address to forward them to (fix: berth restart " + c.name + ")",
                what="target",
                **base,
            )
            return
        for r in reserved:
            d = {**base, "port": r.key, "host": _label(r)}
            if not self.dnat(c, r, target, net, d):
                continue  # internal network: nothing is published, nothing else to check
            self.listening(c, r, target["ip"], d)
            self.host_port(c, r, d)
        self.route_localnet(c, reserved, target["bridge"], base)

    def dnat(self, c: Any, r: Any, target: dict[str, str], net: Any, d: dict[str, Any]) -> bool:
        """The port's DNAT rules in the kernel; False if by design there are none."""
        from engine.network import nft, ports

        specs = [nft.NetSpec(n.name, n.bridge, n.subnet, n.internal) for n in self.ctx.networks]
        spec = ports.port_specs([r], target["ip"], target["bridge"])
        _, wanted, skipped = nft.render(self.ctx.prefix, specs, spec)
        if skipped:
            self.add(
                "ok",
                f"{_label(r)} of {c.name} is not published: network"
                f" {net.name if net else '?'} is internal, which publishes nothing (as Docker)",
                what="dnat",
                **d,
            )
            return False
        want = [s for s in wanted if s.split(": ", 1)[1].startswith("dnat ")]
        table = f"inet {self.ctx.prefix}"
        if self.listing is None or not self.listing.get("exists"):
            # The host check named the missing/unreadable table; this is its symptom.
            self.add(
                "warn",
                f"{_label(r)} of {c.name} has no DNAT rule because nftables table {table} is"
                " missing or unreadable (see nft-table)",
                what="dnat",
                **d,
            )
            return True
        have = set(nft.rule_summaries(self.listing))
        missing = [s for s in want if s not in have]
        if not missing:
            self.add(
                "ok",
                f"{_label(r)} of {c.name}: DNAT rules present ({', '.join(_CHAIN_ROLE)})",
                what="dnat",
                **d,
            )
            return True
        chains = [s.split(":", 1)[0] for s in missing]
        how = "; ".join(f"chain {ch}: {_CHAIN_ROLE.get(ch, ch)}" for ch in chains)
        self.add(
            "fail",
            f"the DNAT rule for published port {_label(r)} of {c.name} is missing from nftables"
            f" table {table} ({how}): connections to host port {r.host_port}/{r.proto} do not"
            f" reach {target['ip']}:{r.container_port} (fix: berth restart {c.name}, or create"
            " or remove any network: either rebuilds the table)",
            what="dnat",
            rules=missing,
            **d,
        )
        return True

    def listening(self, c: Any, r: Any, ip: str, d: dict[str, Any]) -> None:
        addrs = container_listeners(c.pid, r.proto, r.container_port)
        usable = [a for a in addrs if a in ("0.0.0.0", "::", ip)]
        verb = "listens" if r.proto == "tcp" else "is bound"
        if usable:
            self.add(
                "ok",
                f"{c.name} {verb} on {r.key} inside ({', '.join(addrs)})",
                what="listening",
                addresses=addrs,
                **d,
            )
        elif addrs:
            self.add(
                "fail",
                f"{c.name} {verb} on {r.key} only on {', '.join(addrs)}: the DNAT sends"
                f" {_label(r)} to {ip}, where nothing answers (fix: make the program inside"
                f" bind 0.0.0.0:{r.container_port})",
                what="listening",
                addresses=addrs,
                **d,
            )
        else:
            self.add(
                "fail",
                f"nothing listens on {r.key} inside {c.name} (/proc/{c.pid}/net/{r.proto} has no"
                f" socket on port {r.container_port}): {_label(r)} is forwarded to a closed port"
                f" (fix: start the server in {c.name} on 0.0.0.0:{r.container_port}, or publish"
                " the port it really uses)",
                what="listening",
                addresses=[],
                **d,
            )

    def host_port(self, c: Any, r: Any, d: dict[str, Any]) -> None:
        where = f"{r.host_ip}:{r.host_port}/{r.proto}"
        if self.keeper_error:
            self.add("warn", f"cannot ask the port keeper about {where}: {self.keeper_error}",
                     what="host-port", **d)  # fmt: skip
            return
        if self.rows is None:
            self.add("warn", f"cannot read the sockets of {self.ctx.where}: {self.rows_error}",
                     what="host-port", **d)  # fmt: skip
            return
        socks = [s for s in _bound(self.rows, r.proto, r.host_port) if _overlaps(s.addr, r.host_ip)]
        holders = {self.owners[s.inode] for s in socks if s.inode in self.owners}
        ours = r.label in self.held.get(c.id, [])
        by_keeper = any(pid == self.keeper_pid for pid, _ in holders)
        others = sorted(h for h in holders if h[0] != self.keeper_pid)
        if ours and by_keeper and not others:
            self.add(
                "ok",
                f"host port {where} is held for {c.name} by the port keeper (pid"
                f" {self.keeper_pid})",
                what="host-port",
                **d,
            )
            return
        who = ", ".join(f"pid {pid} ({comm})" for pid, comm in others)
        if others:
            # DNAT still wins for traffic, but the reservation is broken: that program
            # waits for connections it never gets, and a restart of c would fail.
            lost = "" if ours else "the port keeper no longer holds it and "
            self.add(
                "fail",
                f"host port {where} of {c.name} is taken by another process: {lost}{who} has"
                f" it (fix: stop {who.split(' (')[0]}, then berth restart {c.name})",
                what="host-port",
                holders=[list(h) for h in others],
                **d,
            )
        elif ours:
            self.add(
                "warn",
                f"the port keeper (pid {self.keeper_pid}) says it holds {where} for {c.name},"
                f" but no socket on that port is in {self.ctx.where}",
                what="host-port",
                **d,
            )
        else:
            keeper = (
                f"the port keeper (pid {self.keeper_pid})" if self.keeper_pid else "no port keeper"
            )
            self.add(
                "warn",
                f"host port {where} of {c.name} is no longer reserved ({keeper} holds nothing"
                " for it): traffic still reaches the container, but any program may now take"
                f" the port (fix: berth restart {c.name})",
                what="host-port",
                **d,
            )

    def route_localnet(self, c: Any, reserved: list[Any], bridge: str, base: dict) -> None:
        from engine.network import sysctl

        loop = [r for r in reserved if r.host_ip.startswith("127.")]
        wild = [r for r in reserved if r.host_ip in ("", "0.0.0.0")]
        if not loop and not wild:
            return
        if self.ctx.report.failing("bridge", bridge=bridge):
            return  # no bridge, no sysctl: the bridge finding says it
        try:
            value = sysctl.get(self.ctx.host_netns, f"net/ipv4/conf/{bridge}/route_localnet")
        except NotFound:
            return  # the bridge is gone: check_bridges reports it
        except EngineError as e:
            self.add("warn", f"cannot read route_localnet of {bridge}: {e}",
                     what="route-localnet", **base)  # fmt: skip
            return
        d = {**base, "bridge": bridge, "value": value}
        if value == "1":
            self.add(
                "ok",
                f"route_localnet is 1 on {bridge}: {c.name}'s ports answer on 127.0.0.1",
                what="route-localnet",
                **d,
            )
            return
        ns = f"ip netns exec {self.ctx.host_netns} " if self.ctx.host_netns else ""
        fix = f"fix: {ns}sysctl -w net.ipv4.conf.{bridge}.route_localnet=1"
        # A 127.0.0.1-only binding answers nowhere else: broken. An every-address one
        # still answers on the host's other addresses: only localhost is lost.
        status: Status = "fail" if loop else "warn"
        ports_ = ", ".join(_label(r) for r in (loop or wild))
        self.add(
            status,
            f"route_localnet is {value} on bridge {bridge}: {ports_} of {c.name} cannot be"
            f" reached on 127.0.0.1 (the kernel drops the forwarded packet's loopback source"
            f" as martian) ({fix})",
            what="route-localnet",
            **d,
        )


def check_published_ports(ctx: Context, container: Any, target: Any) -> list[Finding] | None:
    """The plugin: findings for each published port, None when nothing publishes any."""
    cs = _targets(ctx, container)
    if not cs:
        return None
    chk = _Checker(ctx)
    chk.find_owners({(str(d["proto"]), int(d["host_port"])) for c in cs for d in c.extra["ports"]})
    for c in cs:
        chk.container(c)
    return chk.out


doctor.register_check(CHECK, check_published_ports)
