"""The network doctor: `berth network diagnose [CONTAINER [TARGET]]`.

It runs the checklist people otherwise run by hand (``ip a`` inside the
container, ``nft list table``, ``sysctl net.ipv4.ip_forward``, ``ping``) and
says in plain words what is broken and how to fix it. Its verdicts come from
the kernel, never from Berth's records alone: the records only say what
*should* be there (which networks, bridges, addresses); links, addresses,
routes, nftables rules, sysctls and sockets are read live, and probes run
inside the source container's namespace. So it also finds what someone changed
by hand.

Three levels, each adding to one Report:

- host (always): ip_forward, Berth's nftables table and the rules each network
  needs, each bridge (present, up, gateway address), subnets shadowed by other
  host routes, and a foreign FORWARD policy of DROP (e.g. Docker's);
- container (CONTAINER): its interfaces, addresses, routes and gateway as its
  own namespace sees them, and the host end of each veth (present, up, on the
  right bridge) -- engine/network/doctor_container.py;
- target (CONTAINER TARGET): whether TARGET (a container, an IP, `host` for the engine's host; optionally
  ``:PORT``) is reachable, and if not, why -- engine/network/doctor_target.py.

A root cause is reported once, as ``fail``; symptoms it explains (a peer
without carrier, a failed probe) name it instead of failing on their own, so a
reader (and the tests) see exactly what is broken.

Features built elsewhere (published ports, the DNS resolver) plug in through
``register_check``; without a plugin their check reports "skipped".
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from engine.errors import EngineError

__all__ = [
    "Context",
    "Finding",
    "Report",
    "diagnose",
    "register_check",
    "render_text",
]

Status = Literal["ok", "warn", "fail"]


@dataclass
class Finding:
    """One thing the doctor looked at.

    ``check`` is a stable identifier (``ip-forward``, ``nat``, ``veth`` ...);
    ``details`` names the objects (network, bridge, container, interface) so a
    tool or test can tell which one a finding is about.
    """

    check: str
    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    container: str | None = None
    target: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def add(self, check: str, status: Status, message: str, **details: Any) -> Finding:
        f = Finding(check, status, message, details)
        self.findings.append(f)
        return f

    def failing(self, check: str, **match: Any) -> Finding | None:
        """The first failed finding of ``check`` whose details match (for cause links)."""
        for f in self.failed:
            if f.check == check and all(f.details.get(k) == v for k, v in match.items()):
                return f
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "target": self.target,
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
        }


# -- reading the kernel -----------------------------------------------------------------


def run(cmd: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess:
    from engine.network.nft import _binary

    cmd = [_binary(cmd[0]), *cmd[1:]]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise EngineError(f"{' '.join(cmd)} timed out after {timeout:.0f}s") from None


def ip_json(ns_cmd: list[str], *args: str) -> list[dict[str, Any]]:
    """``ip -j ARGS`` run with the namespace prefix ``ns_cmd`` (see host_ip / ns_ip)."""
    p = run([*ns_cmd, "-j", *args])
    if p.returncode != 0:
        raise EngineError(f"{' '.join([*ns_cmd, *args])} failed: {p.stderr.strip()}")
    try:
        return json.loads(p.stdout or "[]")
    except json.JSONDecodeError:
        return []


def host_ip(host_netns: str) -> list[str]:
    return ["ip", "-n", host_netns] if host_netns else ["ip"]


def ns_ip(path: str) -> list[str]:
    # nsenter takes a namespace file path; `ip -n` only names under /run/netns.
    return ["nsenter", f"--net={path}", "--", "ip"]


def has_flag(link: dict[str, Any], flag: str) -> bool:
    return flag in (link.get("flags") or [])


def kind(link: dict[str, Any]) -> str:
    """The device kind of an ``ip -d -j`` entry ("bridge", "veth"; "" for plain ones)."""
    return (link.get("linkinfo") or {}).get("info_kind", "")


def ipv4_addrs(link: dict[str, Any]) -> list[str]:
    """``a.b.c.d/len`` of every IPv4 address in an ``ip -j addr`` entry."""
    return [
        f"{a['local']}/{a['prefixlen']}"
        for a in link.get("addr_info") or []
        if a.get("family") == "inet" and "local" in a
    ]


# -- context ----------------------------------------------------------------------------


@dataclass
class Context:
    """What every check needs, read once per diagnose."""

    eng: Any
    report: Report
    host_netns: str
    prefix: str
    networks: list[Any]  # NetworkRecord of bridge networks with a subnet
    host_links: dict[str, dict[str, Any]] = field(default_factory=dict)  # ifname -> ip -j addr
    nft: dict[str, Any] | None = None  # nft.list_rules() of our table, None if unreadable
    where: str = "the host namespace"

    def link_by_index(self, index: int) -> dict[str, Any] | None:
        return next((ln for ln in self.host_links.values() if ln.get("ifindex") == index), None)

    def network(self, network_id: str) -> Any:
        return next((n for n in self.networks if n.id == network_id), None)


def _context(eng: Any, report: Report) -> Context:
    from engine.network import store

    cfg = eng.config
    if hasattr(eng, "_networks_ready"):
        eng._networks_ready()
    nets = [n for n in store.all_networks(eng.db) if n.driver == "bridge" and n.bridge and n.subnet]
    where = f"the host namespace {cfg.host_netns}" if cfg.host_netns else "the host namespace"
    ctx = Context(eng, report, cfg.host_netns, cfg.prefix, nets, where=where)
    # -d adds linkinfo (the device kind: bridge, veth) to every entry.
    links = ip_json(host_ip(cfg.host_netns), "-d", "addr", "show")
    ctx.host_links = {ln["ifname"]: ln for ln in links}
    return ctx


# -- plugins ----------------------------------------------------------------------------

# name -> check(ctx, container, target): findings, or None when the feature is not
# available on this engine (the doctor then records a "skipped" finding).
PluginCheck = Callable[[Context, Any, Any], "list[Finding] | None"]
_PLUGINS: dict[str, PluginCheck] = {}
# Plugin names the doctor always asks for once a container is given, and what to say
# when nobody provides them.
EXPECTED_PLUGINS: dict[str, str] = {
    "published-ports": "no published ports: port publishing is not available in this engine",
    "dns": "no resolver: name resolution between containers is not available in this engine",
}


def register_check(name: str, fn: PluginCheck) -> None:
    """Add (or replace) a container-level check provided by another feature.

    ``fn(ctx, container, target)`` gets the Context, the source Container record and
    the parsed target (doctor_target.Target or None); it returns findings, or None to
    say "not applicable here" (reported as skipped).
    """
    _PLUGINS[name] = fn


def run_plugins(ctx: Context, container: Any, target: Any) -> None:
    for name in sorted(set(_PLUGINS) | set(EXPECTED_PLUGINS)):
        fn = _PLUGINS.get(name)
        got = None
        if fn is not None:
            try:
                got = fn(ctx, container, target)
            except EngineError as e:
                ctx.report.add(name, "warn", f"the {name} check could not run: {e}")
                continue
        if got is None:
            why = EXPECTED_PLUGINS.get(name, f"{name}: not applicable")
            ctx.report.add(name, "ok", f"skipped: {why}", skipped=True)
        else:
            ctx.report.findings.extend(got)


# -- host checks ------------------------------------------------------------------------


def check_ip_forward(ctx: Context) -> None:
    from engine.network import sysctl

    outward = [n.name for n in ctx.networks if not n.internal]
    try:
        on = sysctl.ip_forward(ctx.host_netns)
    except EngineError as e:
        ctx.report.add("ip-forward", "warn", f"cannot read ip_forward in {ctx.where}: {e}")
        return
    if on:
        ctx.report.add("ip-forward", "ok", f"ip_forward is 1 in {ctx.where}", value=1)
    elif outward:
        ctx.report.add(
            "ip-forward",
            "fail",
            f"ip_forward is 0 in {ctx.where}: containers cannot reach anything outside their "
            f"network ({', '.join(outward)}) (fix: sysctl -w net.ipv4.ip_forward=1)",
            value=0,
            networks=outward,
        )
    else:
        # Only internal networks (or none): nothing needs forwarding.
        ctx.report.add("ip-forward", "ok", f"ip_forward is 0 in {ctx.where} (not needed)", value=0)


def _specs(ctx: Context) -> list[Any]:
    from engine.network import nft

    return [nft.NetSpec(n.name, n.bridge, n.subnet, n.internal) for n in ctx.networks]


def _rule_severity(summary: str) -> Status:
    # Missing isolation / internal drops / set members are security or correctness
    # holes; the accept and hairpin rules only matter next to a foreign drop or a
    # published port.
    if ": isolate " in summary or ": internal " in summary or summary.startswith("set "):
        return "fail"
    return "warn"


def check_firewall(ctx: Context) -> None:
    """Compare the kernel's table with what nft.render() wants for our networks."""
    from engine.network import nft

    table = f"inet {ctx.prefix}"
    try:
        listing = nft.list_rules(ctx.host_netns, ctx.prefix)
    except EngineError as e:
        ctx.report.add("nft-table", "warn", f"cannot read nftables table {table}: {e}")
        return
    ctx.nft = listing
    if not ctx.networks:
        ctx.report.add("nft-table", "ok", "no bridge networks: no nftables rules needed")
        return
    if not listing["exists"]:
        ctx.report.add(
            "nft-table",
            "fail",
            f"Berth's nftables table {table} is missing in {ctx.where}: no NAT, no isolation"
            " between networks (fix: create or remove any network, which rebuilds it)",
            table=table,
        )
        return
    ctx.report.add("nft-table", "ok", f"nftables table {table} is present", table=table)
    _, wanted, _ = nft.render(ctx.prefix, _specs(ctx), [])
    have = nft.rule_summaries(listing)
    missing = list((Counter(wanted) - Counter(have)).elements())

    for n in ctx.networks:
        if n.internal:
            continue
        summary = f"postrouting: masquerade {nft._short(n.name)} {n.subnet} out of {n.bridge}"
        details = {"network": n.name, "subnet": n.subnet, "bridge": n.bridge, "rule": summary}
        if summary in missing:
            missing.remove(summary)
            ctx.report.add(
                "nat",
                "fail",
                f"the NAT (masquerade) rule for network {n.name} ({n.subnet} out of {n.bridge})"
                f" is missing from nftables table {table}: its containers cannot reach anything"
                " outside the host (fix: create or remove any network, which rebuilds the table)",
                **details,
            )
        else:
            ctx.report.add("nat", "ok", f"network {n.name}: masquerade rule present", **details)
    for summary in missing:
        net = next((n.name for n in ctx.networks if n.bridge in summary), None)
        ctx.report.add(
            "firewall-rule",
            _rule_severity(summary),
            f"nftables table {table} lacks the rule '{summary}'"
            + (f" (network {net})" if net else ""),
            rule=summary,
            network=net,
        )
    # Rules we never write (no comment): someone added them by hand.
    for summary in have:
        if ": no comment: " in summary:
            ctx.report.add(
                "firewall-rule",
                "warn",
                f"nftables table {table} holds a rule Berth did not write: {summary}",
                rule=summary,
            )
    for chain, c in listing.get("chains", {}).items():
        if c.get("policy") == "drop":
            ctx.report.add(
                "firewall-rule",
                "fail",
                f"chain {chain} of nftables table {table} has policy drop (Berth uses accept)",
                chain=chain,
            )


def check_bridges(ctx: Context) -> None:
    for n in ctx.networks:
        prefixlen = ipaddress.ip_network(n.subnet).prefixlen
        want = f"{n.gateway}/{prefixlen}"
        d = {"network": n.name, "bridge": n.bridge}
        link = ctx.host_links.get(n.bridge)
        fix = "fix: start a container on it, which recreates the bridge"
        if link is None:
            ctx.report.add(
                "bridge",
                "fail",
                f"bridge {n.bridge} of network {n.name} does not exist in {ctx.where} ({fix})",
                **d,
            )
        elif kind(link) != "bridge":
            ctx.report.add(
                "bridge", "fail", f"{n.bridge} (network {n.name}) is not a bridge device", **d
            )
        elif not has_flag(link, "UP"):
            ctx.report.add(
                "bridge",
                "fail",
                f"bridge {n.bridge} of network {n.name} is down: its containers reach nothing"
                f" (fix: ip link set {n.bridge} up)",
                **d,
            )
        elif n.gateway and want not in ipv4_addrs(link):
            have = ", ".join(ipv4_addrs(link)) or "none"
            ctx.report.add(
                "bridge",
                "fail",
                f"bridge {n.bridge} of network {n.name} lacks its gateway address {want}"
                f" (has: {have}): containers have no gateway"
                f" (fix: ip addr add {want} dev {n.bridge})",
                **d,
            )
        else:
            ctx.report.add(
                "bridge", "ok", f"bridge {n.bridge} of network {n.name} is up with {want}", **d
            )


def check_overlaps(ctx: Context) -> None:
    """Host routes that shadow or split a network's subnet (a VPN, a hand-made route)."""
    try:
        routes = ip_json(host_ip(ctx.host_netns), "-4", "route", "show", "table", "all")
    except EngineError as e:
        ctx.report.add("route-overlap", "warn", f"cannot read the routes of {ctx.where}: {e}")
        return
    for n in ctx.networks:
        subnet = ipaddress.ip_network(n.subnet)
        clashes = []
        for r in routes:
            dst = r.get("dst", "")
            # The kernel's local/broadcast entries and the bridge's own connected
            # route are what a network is supposed to have; a default route
            # overlaps everything and is fine (longest prefix wins).
            if r.get("table") == "local" or dst in ("", "default") or r.get("dev") == n.bridge:
                continue
            try:
                net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
            except ValueError:
                continue
            if net.overlaps(subnet):
                kind = r.get("type", "unicast")
                via = f" dev {r['dev']}" if r.get("dev") else ""
                table = f" table {r['table']}" if r.get("table") not in (None, "main") else ""
                clashes.append(f"{'' if kind == 'unicast' else kind + ' '}{net}{via}{table}")
        d = {"network": n.name, "subnet": n.subnet}
        if clashes:
            ctx.report.add(
                "route-overlap",
                "fail",
                f"network {n.name} ({n.subnet}) overlaps the host route"
                f"{'s' if len(clashes) > 1 else ''} {', '.join(clashes)} in {ctx.where}: traffic"
                f" for its containers may go there instead of to bridge {n.bridge}"
                " (fix: remove that route, or recreate the network with another --subnet)",
                routes=clashes,
                **d,
            )
        else:
            ctx.report.add(
                "route-overlap", "ok", f"network {n.name} ({n.subnet}) overlaps no host route", **d
            )


def check_forward_policy(ctx: Context) -> None:
    from engine.system import check

    host = check.HostProbe()
    if ctx.host_netns:
        host.netns_exec = ["ip", "netns", "exec", ctx.host_netns]
    found = check.check_forward_policy(ctx.eng.config, host)
    if found.severity == "ok":
        ctx.report.add("forward-policy", "ok", f"no FORWARD drop policy in {ctx.where}")
        return
    # With br_netfilter (bridge-nf-call-iptables=1) even frames between two
    # containers of one bridge pass the FORWARD hook, so the drop hits them too.
    from engine.network import sysctl

    try:
        brnf = sysctl.get(ctx.host_netns, "net.bridge.bridge-nf-call-iptables") == "1"
    except EngineError:
        brnf = False
    also = (
        "; bridge-nf-call-iptables is 1, so containers on the same network cannot reach each"
        " other either"
        if brnf
        else ""
    )
    status: Status = "fail" if ctx.networks else "warn"
    ctx.report.add(
        "forward-policy",
        status,
        f"{found.message} (in {ctx.where}){also} (fix: {found.hint})",
        br_netfilter=brnf,
    )


HOST_CHECKS: tuple[Callable[[Context], None], ...] = (
    check_ip_forward,
    check_firewall,
    check_bridges,
    check_overlaps,
    check_forward_policy,
)


# -- entry point ------------------------------------------------------------------------


def diagnose(eng: Any, container: str | None = None, target: str | None = None) -> Report:
    """Run the checklist: host, then CONTAINER, then CONTAINER -> TARGET."""
    from engine.errors import InvalidArgument

    if target and not container:
        raise InvalidArgument("a TARGET needs a CONTAINER to reach it from")
    report = Report(container=container, target=target)
    ctx = _context(eng, report)
    for check in HOST_CHECKS:
        check(ctx)
    # Importing the plug-ins registers their checks (they import this module).
    from engine.network import doctor_dns, doctor_ports

    if not container:
        ctx.report.findings.extend(doctor_ports.check_published_ports(ctx, None, None) or [])
        del doctor_dns
    if container:
        from engine.network import doctor_container, doctor_target

        src = doctor_container.diagnose_container(ctx, container)
        tgt = None
        if src is not None and target:
            tgt = doctor_target.diagnose_target(ctx, src, target)
        if src is not None:
            run_plugins(ctx, src.record, tgt)
    return report


def render_text(report: Report) -> str:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines = [f"[{marks[f.status]}] {f.check}: {f.message}" for f in report.findings]
    n = len(report.failed)
    warns = sum(1 for f in report.findings if f.status == "warn")
    lines.append(
        "no problems found"
        if not n and not warns
        else f"{n} problem{'s' if n != 1 else ''}, {warns} warning{'s' if warns != 1 else ''}"
    )
    return "\n".join(lines) + "\n"
