"""Berth's nftables table: outbound NAT, published ports and isolation.

Each engine instance owns exactly one table, ``table inet <prefix>``, and never
edits anything else in the ruleset (Docker's iptables chains, the host's own
firewall). The table is rebuilt declaratively from the full list of networks
and published ports on every change, in ONE ``nft -f -`` transaction that
starts with ``add table; delete table; add table``: the kernel applies the
batch atomically, so packets see either the old table or the new one, never a
half-built one, and the reset makes every sync idempotent (no duplicate rules,
hand edits healed). Callers serialise syncs with their own network lock: the
last sync wins.

Why the nft binary rather than a Python binding: Debian's python3-nftables
does not import in the project's virtualenv (DESIGN.md), and text batches on
stdin are the interface nft documents as stable.

Every rule carries a comment that summarises it ("dnat tcp *:8080 ->
10.88.0.2:80"); the comments are what `Changes` diffs and what the network
doctor looks for, so they must describe the rule's whole content.

Our chains use policy accept: a drop policy would be ours to impose on the
whole host. Our ``accept`` verdicts therefore cannot override another table's
drop (e.g. Docker's FORWARD policy DROP); the doctor reports that case.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.errors import EngineError, HostNotReady, InvalidArgument, NotFound

__all__ = [
    "CHAINS",
    "Changes",
    "NetSpec",
    "PortSpec",
    "list_rules",
    "render",
    "rule_summaries",
    "sync",
    "table_exists",
    "teardown",
]

# Chain name -> its base-chain declaration. srcnat/dstnat/filter are nft's
# standard priorities (100 / -100 / 0); output nat runs at dstnat's -100 too.
CHAINS: dict[str, str] = {
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "output": "type nat hook output priority -100; policy accept;",
    "forward": "type filter hook forward priority filter; policy accept;",
}
# A named set of every Berth bridge in the table, used by the isolation,
# localhost-masquerade and accept rules so they do not change when another
# network comes or goes.
BRIDGE_SET = "bridges"

_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
# Linux interface names: 1-15 bytes, no '/', ':' or whitespace; we also keep
# out quotes so a name can never break out of an nft string.
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NETNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TIMEOUT = 30.0


@dataclass(frozen=True)
class NetSpec:
    """A bridge network as the firewall sees it."""

    name: str
    bridge: str
    subnet: str  # "10.88.0.0/16"
    internal: bool = False


@dataclass(frozen=True)
class PortSpec:
    """One published port: host_ip:host_port -> container_ip:container_port."""

    proto: Literal["tcp", "udp"]
    host_ip: str  # "" (or 0.0.0.0 / ::) = every local address of the host
    host_port: int
    container_ip: str
    container_port: int
    bridge: str  # the bridge the container is reached through


@dataclass
class Changes:
    """What a sync or teardown changed, as rule summaries ("chain: comment")."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Ports left out of the table, each with the reason (e.g. internal network).
    skipped: list[str] = field(default_factory=list)
    table_created: bool = False
    table_removed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.table_created or self.table_removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "skipped": list(self.skipped),
            "table_created": self.table_created,
            "table_removed": self.table_removed,
        }


# -- validation ---------------------------------------------------------------


def _check_table(prefix: str) -> None:
    if not isinstance(prefix, str) or not _TABLE_RE.match(prefix):
        raise InvalidArgument(f"invalid nftables table name {prefix!r}", obj=str(prefix))


def _check_ifname(name: str, what: str) -> None:
    if not isinstance(name, str) or not _IFNAME_RE.match(name) or name in (".", ".."):
        raise InvalidArgument(f"invalid {what} interface name {name!r}", obj=str(name))


def _net(spec: NetSpec) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(spec.name, str) or not _NETNAME_RE.match(spec.name):
        raise InvalidArgument(f"invalid network name {spec.name!r}", obj=str(spec.name))
    _check_ifname(spec.bridge, f"network {spec.name} bridge")
    try:
        return ipaddress.ip_network(spec.subnet, strict=False)
    except ValueError as e:
        raise InvalidArgument(f"network {spec.name}: bad subnet: {e}", obj=spec.name) from None


def _ip(value: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise InvalidArgument(f"invalid {what} address {value!r}", obj=str(value)) from None


def _port(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidArgument(f"invalid {what} port {value!r}", obj=str(value))
    return value


def _short(name: str) -> str:
    # nft comments are at most 128 bytes; network names are the only unbounded part.
    return name if len(name) <= 40 else name[:37] + "..."


# -- building the batch ----------------------------------------------------------


def _family(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return "ip" if addr.version == 4 else "ip6"


def _dnat_target(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"{addr}:{port}" if addr.version == 4 else f"[{addr}]:{port}"


def render(
    prefix: str, networks: list[NetSpec], ports: list[PortSpec]
) -> tuple[str, list[str], list[str]]:
    """The nft script for the wanted state, its rule summaries and skipped ports.

    Pure (no kernel access), so it is also what a dry run or the doctor can
    compare against.
    """
    _check_table(prefix)
    t = f"inet {prefix}"
    rules: list[tuple[str, str, str]] = []  # (chain, match+verdict, comment)

    def rule(chain: str, body: str, comment: str) -> None:
        rules.append((chain, body, comment))

    nets = [(n, _net(n)) for n in networks]
    bridges: dict[str, NetSpec] = {}
    for n, _ in nets:
        if n.bridge in bridges and bridges[n.bridge] != n:
            raise InvalidArgument(
                f"networks {bridges[n.bridge].name} and {n.name} share bridge {n.bridge}",
                obj=n.name,
            )
        bridges[n.bridge] = n

    # postrouting: outbound masquerade for every non-internal network, for
    # traffic leaving through anything but its own bridge (same-bridge traffic
    # is plain L2 and keeps container source addresses).
    for n, subnet in nets:
        if not n.internal:
            fam = "ip" if subnet.version == 4 else "ip6"
            rule(
                "postrouting",
                # not "lo": the host's own traffic from a gateway address to a local one
                f'{fam} saddr {subnet} oifname != "{n.bridge}" oifname != "lo" masquerade',
                f"masquerade {_short(n.name)} {subnet} out of {n.bridge}",
            )
    if bridges:
        # A published port reached from 127.0.0.1 (DNAT in output, with
        # route_localnet on the bridge): the container cannot answer 127.0.0.1,
        # so the source becomes the bridge's address.
        rule(
            "postrouting",
            f"ct status dnat ip saddr 127.0.0.0/8 oifname @{BRIDGE_SET} masquerade",
            "masquerade localhost to published ports",
        )
    # Hairpin: a container reaching a port published by a neighbour on the same
    # network. Without masquerade the neighbour would answer straight over L2
    # from an address the client never talked to (unless br_netfilter happens
    # to run conntrack on bridged frames). Matching on addresses, not iifname:
    # with br_netfilter the DNAT'd frame is bridged, and postrouting then has
    # no input interface.
    for n, subnet in nets:
        fam = "ip" if subnet.version == 4 else "ip6"
        rule(
            "postrouting",
            f'ct status dnat {fam} saddr {subnet} {fam} daddr {subnet} oifname "{n.bridge}" masquerade',
            f"hairpin {_short(n.name)} {subnet} on {n.bridge}",
        )

    # prerouting (from outside and from containers) and output (from the host
    # itself, 127.0.0.1 included): DNAT published ports.
    skipped: list[str] = []
    seen: dict[tuple[str, str, int], PortSpec] = {}
    for p in ports:
        if p.proto not in ("tcp", "udp"):
            raise InvalidArgument(f"invalid protocol {p.proto!r} (tcp or udp)", obj=str(p.proto))
        hport = _port(p.host_port, "host")
        cport = _port(p.container_port, "container")
        caddr = _ip(p.container_ip, "container")
        _check_ifname(p.bridge, "port bridge")
        host_ip = "" if p.host_ip in ("", "0.0.0.0", "::") else p.host_ip
        haddr = _ip(host_ip, "host") if host_ip else None
        if haddr is not None and haddr.version != caddr.version:
            raise InvalidArgument(
                f"port {host_ip}:{hport}: host and container addresses differ in IP version",
                obj=f"{host_ip}:{hport}",
            )
        key = (p.proto, host_ip, hport)
        if key in seen:
            if seen[key] != p:
                raise InvalidArgument(
                    f"host port {host_ip or '*'}:{hport}/{p.proto} is published twice",
                    obj=f"{hport}/{p.proto}",
                )
            continue
        seen[key] = p
        desc = f"{host_ip or '*'}:{hport} -> {_dnat_target(caddr, cport)}"
        net = bridges.get(p.bridge)
        if net is not None and net.internal:
            # Docker publishes nothing on internal networks; a DNAT the forward
            # chain then drops would only mislead whoever reads the rules.
            skipped.append(f"{p.proto} {desc}: network {net.name} is internal")
            continue
        fam = _family(caddr)
        dst = (
            f"{fam} daddr {haddr}"
            if haddr
            else f"meta nfproto ipv{caddr.version} fib daddr type local"
        )
        body = f"{dst} {p.proto} dport {hport} dnat {fam} to {_dnat_target(caddr, cport)}"
        for chain in ("prerouting", "output"):
            rule(chain, body, f"dnat {p.proto} {desc}")

    # forward: drops first (they must win over the accepts), then accepts.
    for n, _ in nets:
        if n.internal:
            rule(
                "forward",
                f'iifname "{n.bridge}" oifname != "{n.bridge}" drop',
                f"internal {_short(n.name)} {n.bridge}: no way out",
            )
            rule(
                "forward",
                f'oifname "{n.bridge}" iifname != "{n.bridge}" drop',
                f"internal {_short(n.name)} {n.bridge}: no way in",
            )
    for br in sorted(bridges):
        # Isolation between Berth networks, except for DNAT'd connections: a
        # published port is public, reachable through the host's address from
        # anywhere, other networks included. "& dnat == 0", not "!= dnat":
        # the latter compares the whole status word, which also holds other bits.
        rule(
            "forward",
            f'iifname "{br}" oifname != "{br}" oifname @{BRIDGE_SET} ct status & dnat == 0 drop',
            f"isolate {br} from other Berth bridges",
        )
    if bridges:
        rule("forward", "ct state established,related accept", "accept established")
        rule("forward", f"iifname @{BRIDGE_SET} accept", "accept from Berth bridges")
        rule("forward", f"oifname @{BRIDGE_SET} accept", "accept to Berth bridges")

    lines = [f"add table {t}", f"delete table {t}", f"add table {t}"]
    lines += [f"add chain {t} {name} {{ {decl} }}" for name, decl in CHAINS.items()]
    lines.append(f"add set {t} {BRIDGE_SET} {{ type ifname; }}")
    if bridges:
        elems = ", ".join(f'"{b}"' for b in sorted(bridges))
        lines.append(f"add element {t} {BRIDGE_SET} {{ {elems} }}")
    for chain, body, comment in rules:
        lines.append(f'add rule {t} {chain} {body} comment "{comment}"')
    summaries = [f"{chain}: {comment}" for chain, _, comment in rules]
    summaries += [f"set {BRIDGE_SET}: {b}" for b in sorted(bridges)]
    return "\n".join(lines) + "\n", summaries, skipped


# -- running nft -------------------------------------------------------------------


def _binary(name: str) -> str:
    # The venv's PATH may lack /usr/sbin (where Debian puts nft).
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not found:
        pkg = "nftables" if name == "nft" else "util-linux"
        raise HostNotReady(f"{name} not found: install the {pkg} package", obj=name)
    return found


def _ns_path(netns: str) -> str:
    """A named namespace ("bt1n") or a namespace file path ("/proc/PID/ns/net")."""
    if netns.startswith("/"):
        path = netns
    else:
        from engine.netns import netns_path

        path = str(netns_path(netns))
    if not os.path.exists(path):
        raise NotFound(f"network namespace {netns} does not exist", obj=netns)
    return path


def _nft(netns: str, args: list[str], script: str | None = None) -> subprocess.CompletedProcess:
    """Run nft (in ``netns`` when given) and return the finished process.

    nsenter rather than ``ip netns exec``: only the network namespace has to
    change, and ip netns exec also unshares a mount namespace to remount /sys.
    """
    cmd = [_binary("nft"), *args]
    if netns:
        cmd = [_binary("nsenter"), f"--net={_ns_path(netns)}", "--", *cmd]
    try:
        return subprocess.run(
            cmd, input=script, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise EngineError(f"nft {' '.join(args)} timed out after {_TIMEOUT:.0f}s") from None


def _where(netns: str) -> str:
    return f" in network namespace {netns}" if netns else ""


def table_exists(netns: str, prefix: str) -> bool:
    """Whether ``table inet <prefix>`` exists in the namespace."""
    _check_table(prefix)
    p = _nft(netns, ["-j", "list", "tables", "inet"])
    if p.returncode != 0:
        raise EngineError(f"nft list tables failed{_where(netns)}: {p.stderr.strip()}", obj=prefix)
    items = json.loads(p.stdout or "{}").get("nftables", [])
    return any(i.get("table", {}).get("name") == prefix for i in items)


def list_rules(netns: str, prefix: str) -> dict[str, Any]:
    """The table as the kernel has it, from ``nft -j list table inet <prefix>``.

    ``{"table", "exists", "chains": {name: {type, hook, prio, policy, rules:
    [{handle, comment, expr}]}}, "sets": {name: [elements]}}``; rules in
    kernel order. Read from the kernel, not from Berth's records, so it also
    shows what someone changed by hand.
    """
    _check_table(prefix)
    out: dict[str, Any] = {"table": prefix, "exists": False, "chains": {}, "sets": {}}
    p = _nft(netns, ["-j", "list", "table", "inet", prefix])
    if p.returncode != 0:
        if "No such file or directory" in p.stderr:
            return out
        raise EngineError(
            f"nft list table inet {prefix} failed{_where(netns)}: {p.stderr.strip()}", obj=prefix
        )
    out["exists"] = True
    for item in json.loads(p.stdout or "{}").get("nftables", []):
        if "chain" in item:
            c = item["chain"]
            out["chains"][c["name"]] = {
                "type": c.get("type"),
                "hook": c.get("hook"),
                "prio": c.get("prio"),
                "policy": c.get("policy"),
                "rules": [],
            }
        elif "rule" in item:
            r = item["rule"]
            chain = out["chains"].setdefault(r["chain"], {"rules": []})
            chain["rules"].append(
                {"handle": r.get("handle"), "comment": r.get("comment"), "expr": r.get("expr", [])}
            )
        elif "set" in item:
            s = item["set"]
            out["sets"][s["name"]] = [_elem(e) for e in s.get("elem", [])]
    return out


def _elem(e: Any) -> str:
    # Set elements come back as plain values or as {"elem": {"val": ...}}.
    if isinstance(e, dict) and "elem" in e:
        e = e["elem"].get("val")
    return e if isinstance(e, str) else json.dumps(e, separators=(",", ":"))


def rule_summaries(listing: dict[str, Any]) -> list[str]:
    """Summaries ("chain: comment") of a list_rules() result, comparable to render()'s.

    A rule without a comment (added by hand) is summarised by its expression.
    """
    out = []
    for chain, c in listing.get("chains", {}).items():
        for r in c.get("rules", []):
            text = r.get("comment") or "no comment: " + json.dumps(
                r.get("expr"), separators=(",", ":")
            )
            out.append(f"{chain}: {text}")
    for name, elems in listing.get("sets", {}).items():
        out += [f"set {name}: {e}" for e in elems]
    return out


def _diff(before: list[str], after: list[str]) -> tuple[list[str], list[str]]:
    """Multiset difference in list order: a rule added twice by hand shows up
    as removed once, not as unchanged."""

    def minus(xs: list[str], ys: list[str]) -> list[str]:
        extra = Counter(xs) - Counter(ys)
        out = []
        for s in xs:
            if extra[s] > 0:
                out.append(s)
                extra[s] -= 1
        return out

    return minus(after, before), minus(before, after)


def sync(netns: str, prefix: str, networks: list[NetSpec], ports: list[PortSpec]) -> Changes:
    """Make ``table inet <prefix>`` hold exactly the rules for these networks and ports.

    One atomic transaction; repeating it with the same arguments changes
    nothing. Raises InvalidArgument for bad specs (before touching the kernel)
    and EngineError with nft's message if the kernel refuses the batch (then
    the old table is left as it was).
    """
    script, wanted, skipped = render(prefix, networks, ports)
    before = list_rules(netns, prefix)
    p = _nft(netns, ["-f", "-"], script)
    if p.returncode != 0:
        raise EngineError(
            f"cannot apply nftables table inet {prefix}{_where(netns)}: {p.stderr.strip()}",
            obj=prefix,
        )
    added, removed = _diff(rule_summaries(before), wanted)
    return Changes(
        added=added, removed=removed, skipped=skipped, table_created=not before["exists"]
    )


def teardown(netns: str, prefix: str) -> Changes:
    """Delete the table and everything in it; fine if it is not there (retries)."""
    before = list_rules(netns, prefix)
    if not before["exists"]:
        return Changes()
    t = f"inet {prefix}"
    # add-then-delete: no error if something else deleted it in between.
    p = _nft(netns, ["-f", "-"], f"add table {t}\ndelete table {t}\n")
    if p.returncode != 0:
        raise EngineError(
            f"cannot delete nftables table {t}{_where(netns)}: {p.stderr.strip()}", obj=prefix
        )
    return Changes(removed=rule_summaries(before), table_removed=True)
