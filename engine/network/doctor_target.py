"""The network doctor's reachability check: can CONTAINER reach TARGET, and if not, why?

TARGET is a container (name or ID), an IPv4 address, either with ``:PORT``
(TCP). The verdict comes from the kernel and from probes run inside the source
container's network namespace (a forked child that setns()es, see
engine.netns.run_in_netns): an ICMP echo over a raw socket, or a TCP connect
when a port is given; for a port on a container, the target's own
``/proc/PID/net/tcp`` says whether anything listens.

When the probe cannot succeed by design (the two containers are on different
networks, or the source's network is internal) the finding names that policy
and the kernel rule that enforces it. When a probe fails and an earlier check
already failed, the probe's finding names those causes instead of failing a
second time.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from engine.errors import NotFound
from engine.network.doctor import Context, ipv4_addrs
from engine.network.doctor_container import Source, read_source

__all__ = ["Target", "diagnose_target", "parse_target"]

PROBE_TIMEOUT = 1.0  # seconds per attempt, like ping -W1
TCP_LISTEN = "0A"  # st column of /proc/net/tcp


@dataclass
class Target:
    text: str
    host: str
    port: int | None
    ip: str = ""
    container: Source | None = None
    network: Any = None  # the shared network the probe goes over, if any


def parse_target(text: str) -> tuple[str, int | None]:
    """``NAME``, ``NAME:PORT``, ``IP`` or ``IP:PORT`` -> (host, port)."""
    from engine.errors import InvalidArgument

    host, sep, port = text.rpartition(":")
    if not sep:
        return text, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidArgument(f"invalid port in target {text!r}", obj=text)
    return host, int(port)


# -- probes (these run in a forked child inside the source's namespace) -----------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _ping(ip: str, attempts: int = 2, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """One ICMP echo per attempt over a raw socket; {"ok", "error", "rtt_ms"}.

    A raw socket rather than the ping binary: the host may have none (DESIGN.md),
    and the container's own may not exist or be trusted.
    """
    ident = os.getpid() & 0xFFFF
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        for seq in range(1, attempts + 1):
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"berth-doctor"
            pkt = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
            start = time.monotonic()
            try:
                s.sendto(pkt, (ip, 0))
            except OSError as e:
                # ENETUNREACH: no route at all; no point in retrying.
                return {"ok": False, "error": e.strerror or str(e), "errno": e.errno}
            deadline = start + timeout
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    data, addr = s.recvfrom(2048)
                except TimeoutError:
                    break
                ihl = (data[0] & 0x0F) * 4
                typ, code = data[ihl], data[ihl + 1]
                if typ == 0 and addr[0] == ip and data[ihl + 4 : ihl + 6] == pkt[4:6]:
                    return {"ok": True, "rtt_ms": round((time.monotonic() - start) * 1000, 2)}
                if typ == 3:  # destination unreachable: our echo is quoted after 8 bytes
                    inner = data[ihl + 8 :]
                    qihl = (inner[0] & 0x0F) * 4 if inner else 0
                    if inner[qihl + 4 : qihl + 6] == pkt[4:6]:
                        return {
                            "ok": False,
                            "error": f"destination unreachable (code {code}) from {addr[0]}",
                        }
        return {"ok": False, "error": f"no reply to ping within {timeout:g}s ({attempts} tries)"}
    finally:
        s.close()


def _connect(ip: str, port: int, timeout: float = 2 * PROBE_TIMEOUT) -> dict[str, Any]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        return {"ok": True}
    except ConnectionRefusedError:
        return {"ok": False, "error": "connection refused", "refused": True}
    except TimeoutError:
        return {"ok": False, "error": f"no answer to a TCP connect within {timeout:g}s"}
    except OSError as e:
        return {"ok": False, "error": e.strerror or str(e), "errno": e.errno}
    finally:
        s.close()


def probe(src: Source, ip: str, port: int | None) -> dict[str, Any]:
    from engine.netns import run_in_netns

    if port is None:
        return run_in_netns(src.netns, lambda: _ping(ip))
    return run_in_netns(src.netns, lambda: _connect(ip, port))


# -- listening sockets --------------------------------------------------------------------


def _hex_ip4(h: str) -> str:
    return str(ipaddress.IPv4Address(bytes.fromhex(h)[::-1]))


def listeners(pid: int, port: int) -> list[str]:
    """Addresses with a TCP socket listening on ``port`` in the namespace of ``pid``.

    /proc/PID/net/tcp shows the sockets of that process's network namespace, so
    this sees what `ss -ltn` inside the container would, without entering it.
    """
    out: list[str] = []
    for fname, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open(f"/proc/{pid}/net/{fname}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 4 or cols[3] != TCP_LISTEN:
                continue
            addr, _, hport = cols[1].partition(":")
            if int(hport, 16) != port:
                continue
            if v6:
                out.append("::" if set(addr) == {"0"} else f"[{addr}]")
            else:
                out.append(_hex_ip4(addr))
    return out


# -- the check ------------------------------------------------------------------------------


def _causes(ctx: Context) -> list[str]:
    """Failed checks so far, short: "veth (app, eth0)" -- their messages are above."""
    out = []
    for f in ctx.report.failed:
        about = [str(f.details[k]) for k in ("network", "interface") if f.details.get(k)]
        out.append(f"{f.check} ({', '.join(about)})" if about else f.check)
    return out


def _find_container_by_ip(ctx: Context, ip: str) -> str | None:
    from engine.network import store

    for n in ctx.networks:
        for ep in store.endpoints_of_network(ctx.eng.db, n.id):
            if ep.ip == ip:
                return ep.container_id
    return None


def _in_nft(ctx: Context, summary: str) -> bool:
    from engine.network import nft

    return ctx.nft is not None and summary in nft.rule_summaries(ctx.nft)


# TARGET names for "the engine's host" (Docker's and Podman's names for it too).
HOST_NAMES = ("host", "host.docker.internal", "host.containers.internal")


def diagnose_target(ctx: Context, src: Source, text: str) -> Target | None:
    host, port = parse_target(text)
    t = Target(text=text, host=host, port=port)
    d = {"container": src.name, "target": text}
    if host in HOST_NAMES:
        return _host_target(ctx, src, t, d)
    try:
        ipaddress.IPv4Address(host)
        t.ip = host
        ref = _find_container_by_ip(ctx, host)
    except ValueError:
        ref = host
    if ref is not None:
        try:
            t.container = read_source(ctx, ref)
        except NotFound:
            ctx.report.add(
                "target",
                "fail",
                f"target {host} is neither a container nor an IPv4 address",
                **d,
            )
            return None
        if t.container is None:
            return None  # not running: read_source said so
    if t.container is not None and t.container.record.id == src.record.id:
        ctx.report.add("target", "ok", f"{host} is {src.name} itself", **d)
        return t

    src_nets = {net.id: net for _, net in src.endpoints}
    if not src.addresses():
        ctx.report.add(
            "reachability",
            "fail",
            f"{src.name} has no IPv4 address: it cannot reach {host}"
            + (" (it has --network none)" if not src.endpoints else ""),
            **d,
        )
        return t

    # Which network would the traffic use?
    if t.container is not None:
        tgt = t.container
        shared = [(ep, net) for ep, net in tgt.endpoints if net.id in src_nets]
        if shared:
            ep, net = shared[0]
            t.network = net
            have = ipv4_addrs(tgt.links.get(ep.ifname, {}))
            if not have:
                ctx.report.add(
                    "address",
                    "fail",
                    f"target {tgt.name} has no address on {ep.ifname} (network {net.name}):"
                    " nothing can reach it there",
                    container=tgt.name,
                    interface=ep.ifname,
                    network=net.name,
                )
                return t
            if not t.ip:
                t.ip = have[0].split("/")[0]
            if net.name == "bridge" and not host.replace(".", "").isdigit():
                ctx.report.add(
                    "name-resolution",
                    "ok",
                    f"on the default bridge network names do not resolve, as on Docker:"
                    f" inside {src.name}, reach {tgt.name} by its address {t.ip}"
                    " (or use a user-defined network)",
                    **d,
                )
        else:
            tnets = [net for _, net in tgt.endpoints]
            if not t.ip and tnets:
                ep0 = tgt.endpoints[0][0]
                addrs = ipv4_addrs(tgt.links.get(ep0.ifname, {}))
                t.ip = addrs[0].split("/")[0] if addrs else ep0.ip
            if _by_design(ctx, src, t, [n for n in src_nets.values()], tnets, d):
                return t
            if not t.ip:
                ctx.report.add(
                    "reachability",
                    "fail",
                    f"target {tgt.name} has no address on any network (--network none?)",
                    **d,
                )
                return t
    else:
        addr = ipaddress.IPv4Address(t.ip)
        here = [n for n in src_nets.values() if addr in ipaddress.ip_network(n.subnet)]
        if here:
            t.network = here[0]
        else:
            other = [
                n
                for n in ctx.networks
                if n.id not in src_nets
                and addr in ipaddress.ip_network(n.subnet)
                # the other network's gateway is the host itself: not behind isolation
                and str(addr) != n.gateway
            ]
            if _by_design(ctx, src, t, list(src_nets.values()), other, d):
                return t

    _probe_and_report(ctx, src, t, d)
    return t


def _host_target(ctx: Context, src: Source, t: Target, d: dict[str, Any]) -> Target:
    """``host:PORT``: the engine's host as the container sees it — its gateway on the
    container's first bridge network — and, for a port, who publishes it there."""
    nets = [net for _, net in src.endpoints if net.driver == "bridge" and net.gateway]
    if not nets:
        ctx.report.add(
            "reachability",
            "fail",
            f"{src.name} has no bridge network, so no gateway leads to the host"
            + (" (it has --network none)" if not src.endpoints else ""),
            **d,
        )
        return t
    t.network, t.ip = nets[0], nets[0].gateway
    if t.port is not None:
        owners = _publishers(ctx, t.port)
        if owners:
            names = ", ".join(f"{c} (-> {cport}/tcp)" for c, cport in owners)
            ctx.report.add(
                "published",
                "ok",
                f"host port {t.port} is published by {names}; from {src.name} it is reached"
                f" at the host's address {t.ip} (hairpin through the DNAT rule)",
                port=t.port,
                publishers=[c for c, _ in owners],
                **d,
            )
        else:
            ctx.report.add(
                "published",
                "warn",
                f"no running container publishes host port {t.port}: only a program of the"
                " host's own can answer there",
                port=t.port,
                **d,
            )
    _probe_and_report(ctx, src, t, d)
    return t


def _publishers(ctx: Context, port: int) -> list[tuple[str, int]]:
    """(container name, container port) of running containers publishing tcp ``port``."""
    from engine.containers import records
    from engine.network import ports

    out = []
    for c in records.load_all(ctx.eng.db):
        if c.state not in records.ACTIVE:
            continue
        for raw in c.extra.get("ports") or []:
            r = ports.Reserved.from_dict(raw)
            if r.host_port == port and r.proto == "tcp":
                out.append((c.name, r.container_port))
    return out


def _by_design(
    ctx: Context, src: Source, t: Target, src_nets: list[Any], tnets: list[Any], d: dict
) -> bool:
    """Internal network or isolation: report it (verified in the kernel); True if so."""
    from engine.network import nft

    if src_nets and all(n.internal for n in src_nets):
        inner = src_nets[0]
        rule = f"forward: internal {nft._short(inner.name)} {inner.bridge}: no way out"
        default = [r for r in src.routes if r.get("dst") == "default"]
        enforced = []
        if _in_nft(ctx, rule):
            enforced.append("the firewall drops traffic leaving it")
        if not default:
            enforced.append(f"{src.name} has no default route")
        res = probe(src, t.ip, t.port) if t.ip else {"ok": False, "error": "no address"}
        if res["ok"]:
            ctx.report.add(
                "internal",
                "warn",
                f"{src.name} is on internal network {inner.name} yet reached {t.host}:"
                " check the network's rules",
                network=inner.name,
                probe=res,
                **d,
            )
        else:
            ctx.report.add(
                "internal",
                "fail",
                f"internal: {src.name} is on internal network {inner.name}, which has no route"
                f" out ({'; '.join(enforced) or 'by design'}), so {t.host} is unreachable"
                f" (fix: berth network connect NETWORK {src.name} to a non-internal network)",
                network=inner.name,
                rule_present=_in_nft(ctx, rule),
                probe=res,
                **d,
            )
        return True
    if not tnets:
        return False
    a = ", ".join(n.name for n in src_nets)
    b = ", ".join(n.name for n in tnets)
    who = t.container.name if t.container else t.host
    # Isolation is the forward rule of the source's bridge, and the target's bridge
    # being in the table's bridge set (what the rule matches against).
    checks = [
        _in_nft(ctx, f"forward: isolate {n.bridge} from other Berth bridges") for n in src_nets
    ] + [_in_nft(ctx, f"set {nft.BRIDGE_SET}: {n.bridge}") for n in tnets]
    enforced = bool(checks) and all(checks)
    res = probe(src, t.ip, t.port) if t.ip else {"ok": False, "error": "no address"}
    details = {"networks": [n.name for n in src_nets], "target_networks": [n.name for n in tnets]}
    if res["ok"]:
        ctx.report.add(
            "isolation",
            "warn",
            f"{src.name} (on {a}) reached {who} (on {b}) although Berth isolates networks"
            + ("" if enforced else ": the isolation rule is missing"),
            probe=res,
            **details,
            **d,
        )
    elif enforced:
        ctx.report.add(
            "isolation",
            "fail",
            f"isolation: {src.name} is on {a} and {who} on {b}; Berth drops traffic between"
            f" networks (fix: berth network connect {tnets[0].name} {src.name})",
            probe=res,
            rule_present=True,
            **details,
            **d,
        )
    else:
        ctx.report.add(
            "isolation",
            "fail",
            f"{src.name} (on {a}) cannot reach {who} (on {b}): different networks, and Berth's"
            f" isolation rule is not in the kernel either ({res.get('error')})",
            probe=res,
            rule_present=False,
            **details,
            **d,
        )
    return True


def _probe_and_report(ctx: Context, src: Source, t: Target, d: dict[str, Any]) -> None:
    what = f"{t.host}" + (f" ({t.ip})" if t.ip != t.host else "")
    listening: list[str] | None = None
    if t.port is not None and t.container is not None:
        tgt = t.container
        listening = listeners(tgt.record.pid, t.port)
        usable = [a for a in listening if a in ("0.0.0.0", "::", t.ip)]
        if usable:
            ctx.report.add(
                "listening",
                "ok",
                f"{tgt.name} listens on tcp port {t.port} ({', '.join(listening)})",
                port=t.port,
                **d,
            )
        elif listening:
            ctx.report.add(
                "listening",
                "fail",
                f"{tgt.name} listens on tcp port {t.port} only on {', '.join(listening)}:"
                f" not reachable at {t.ip} (fix: make the program bind 0.0.0.0)",
                port=t.port,
                **d,
            )
        else:
            ctx.report.add(
                "listening",
                "fail",
                f"nothing listens on tcp port {t.port} inside {tgt.name}"
                f" (/proc/{tgt.record.pid}/net/tcp has no listening socket on it)",
                port=t.port,
                **d,
            )
    causes = _causes(ctx)
    res = probe(src, t.ip, t.port)
    how = f"tcp port {t.port}" if t.port else "ping"
    common = {"probe": res, "ip": t.ip, **d}
    if res["ok"]:
        rtt = f" in {res['rtt_ms']} ms" if "rtt_ms" in res else ""
        ctx.report.add(
            "reachability", "ok", f"{src.name} reaches {what} ({how} answered{rtt})", **common
        )
    elif res.get("refused") and listening is None:
        # A refusal is an answer: the path works, the port is closed.
        ctx.report.add(
            "reachability",
            "fail",
            f"{what} answered but refused tcp port {t.port}: the address is reachable from"
            f" {src.name}, nothing listens on that port there",
            **common,
        )
    elif causes:
        ctx.report.add(
            "reachability",
            "warn",
            f"{src.name} cannot reach {what} by {how} ({res['error']}), explained by the"
            f" failed check{'s' if len(causes) > 1 else ''} {', '.join(causes)} (see above)",
            causes=causes,
            **common,
        )
    else:
        ctx.report.add(
            "reachability",
            "fail",
            f"{src.name} cannot reach {what} by {how} ({res['error']}) and no check found why:"
            " look for firewall rules outside Berth's table, or the target's own firewall",
            **common,
        )
