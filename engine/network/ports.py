"""Published ports: Docker's ``-p``/``-P`` syntax, host-port reservation, the port
keeper, and the ``ps`` / ``inspect`` / ``port`` views.

Reservation works as Podman's does: for every published port a real socket is
bound (and, for TCP, listening) on host_ip:host_port inside the engine's
"host" network namespace, before anything starts. A port that is taken fails
right there, naming the process that holds it; a port we got stays taken by us
for the container's whole life, so no check-then-use race exists. Traffic
never reaches these sockets: the nftables DNAT (prerouting for outside and
container traffic, output for the host's own) rewrites it first.

The sockets are opened in a forked child that setns()es into the namespace and
sends them back over SCM_RIGHTS: a socket keeps the namespace it was made in,
and the caller never switches namespaces itself (it may be threaded).

Podman hands the sockets to conmon; ours cannot take extra descriptors, so ONE
"port keeper" per engine instance (a long-lived helper like the health
runner, engine.helpers) receives them over a unix socket with the container's
id and holds them until told to let go (:func:`release`) or until the
container's row is gone. It exits when it has held nothing for a while; the
next :func:`hold` starts it again. If it dies, the reservations die with it
(the DNAT rules still work): ``system boot`` re-holds them (:func:`rehold`).

Only IPv4 host addresses are published (nft.PortSpec's container side is IPv4).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import resource
import select
import signal
import socket
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import Conflict, EngineError, InvalidArgument, NotFound, Unsupported

__all__ = [
    "KEEPER",
    "PortBinding",
    "Reserved",
    "close_all",
    "ensure_keeper",
    "format_ports",
    "hold",
    "held",
    "inspect_ports",
    "parse_publish",
    "port_bindings_config",
    "port_lines",
    "port_specs",
    "publish_all",
    "rehold",
    "release",
    "reserve",
]

KEEPER = "ports"  # the helper's name in the helpers table
KEEPER_COMM = b"berth-ports"  # what /proc/PID/comm shows, so conflicts name it
IDLE_EXIT = 10.0  # the keeper exits after holding nothing this long
IDLE_EXIT_ENV = "BERTH_PORTS_IDLE_EXIT"
RECONCILE = 2.0  # how often the keeper drops ports of containers whose row is gone
OWNER_CHECK = 5.0
TICK = 0.25
CONNECT_WAIT = 5.0  # how long a client waits for a just-started keeper's socket
REPLY_WAIT = 15.0
MAX_FDS = 250  # fds per SCM_RIGHTS message (the kernel's SCM_MAX_FD is 253)
MAX_MSG = 1 << 20

_PROTOS = ("tcp", "udp")
CLONE_NEWNET = 0x40000000
PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


# -- what the user asked for ----------------------------------------------------------


@dataclass(frozen=True)
class PortBinding:
    """One ``-p`` mapping as asked for (before any host port is chosen)."""

    proto: str  # "tcp" | "udp"
    host_ip: str  # "" = every IPv4 address of the host
    host_port: int  # 0 = a random free port
    container_port: int
    # Docker's "-p 8000-8010:80": the first free port of host_port..host_port_end.
    host_port_end: int = 0

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "host_ip": self.host_ip,
            "host_port": self.host_port,
            "container_port": self.container_port,
            "host_port_end": self.host_port_end,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PortBinding:
        return cls(
            str(d["proto"]),
            str(d.get("host_ip", "")),
            int(d.get("host_port", 0)),
            int(d["container_port"]),
            int(d.get("host_port_end", 0)),
        )


def _port_range(text: str, what: str, allow_zero: bool = False) -> tuple[int, int]:
    start_s, dash, end_s = text.partition("-")
    if not start_s.isdigit() or (dash and not end_s.isdigit()):
        raise InvalidArgument(f"invalid {what}: {text} (invalid port format)", obj=text)
    start, end = int(start_s), int(end_s) if dash else int(start_s)
    low = 0 if allow_zero and not dash else 1
    if not (low <= start <= 65535 and low <= end <= 65535):
        raise InvalidArgument(f"invalid {what}: {text} (ports are 1-65535)", obj=text)
    if end < start:
        raise InvalidArgument(
            f"invalid {what}: {text} (invalid range: {end} is below {start})", obj=text
        )
    return start, end


def _split_parts(spec: str) -> tuple[str, str, str]:
    """[IP:][HOSTPORT:]CONTAINERPORT -> (ip, host, container), as Docker splits it."""
    if spec.startswith("["):
        ip, close, rest = spec[1:].partition("]")
        parts = rest[1:].split(":") if rest.startswith(":") else []
        if not close or len(parts) != 2:
            raise InvalidArgument(f"invalid port format: {spec}", obj=spec)
        return ip, parts[0], parts[1]
    parts = spec.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    # More than 3 parts: a bare IPv6 address (Docker joins all but the last two).
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _proto(text: str, spec: str) -> str:
    proto = (text or "tcp").lower()
    if proto == "sctp":
        raise Unsupported(f"cannot publish {spec}: sctp ports are not supported", obj=spec)
    if proto not in _PROTOS:
        raise InvalidArgument(f"invalid proto: {text} (in {spec}; tcp or udp)", obj=spec)
    return proto


def _host_ip(ip: str, spec: str) -> str:
    if not ip:
        return ""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidArgument(f"invalid IP address: {ip} (in {spec})", obj=spec) from None
    if addr.version == 6:
        raise InvalidArgument(
            f"cannot publish {spec}: IPv6 host addresses ({ip}) are not supported; "
            "give an IPv4 address or none",
            obj=spec,
        )
    return str(addr)


def parse_publish(spec: str) -> list[PortBinding]:
    """Docker's ``-p [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]``, ranges included.

    ``8000-8005:80-85`` maps pairwise; ``80-85`` gives each a random host port;
    ``8000-8010:80`` takes the first free host port of the range (as Docker);
    ``127.0.0.1::80`` a random one on loopback only.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgument("invalid port format: empty port specification", obj=str(spec))
    ip, host, cont = _split_parts(spec)
    cont, _, proto_s = cont.partition("/")
    if not cont:
        raise InvalidArgument(f"no port specified: {spec}<empty>", obj=spec)
    proto = _proto(proto_s, spec)
    host_ip = _host_ip(ip, spec)
    cs, ce = _port_range(cont, "containerPort")
    hs = he = 0
    if host:
        hs, he = _port_range(host, "hostPort", allow_zero=True)
        if (ce - cs) != (he - hs) and ce != cs:
            raise InvalidArgument(
                f"invalid ranges specified for container and host Ports: {cont} and {host} "
                "(hostPort and containerPort ranges must be the same length)",
                obj=spec,
            )
    if cs == ce and he > hs:
        return [PortBinding(proto, host_ip, hs, cs, he)]
    return [
        PortBinding(proto, host_ip, hs + i if hs else 0, p) for i, p in enumerate(range(cs, ce + 1))
    ]


def publish_all(
    exposed: Iterable[str] | Mapping[str, Any], already: Iterable[PortBinding] = ()
) -> list[PortBinding]:
    """``-P``: each exposed port (``{"80/tcp": {}}`` keys) not bound by ``-p`` gets a
    random host port on every address, as Docker's PublishAllPorts does."""
    bound = {(b.container_port, b.proto) for b in already}
    keys: list[tuple[int, str]] = []
    for key in exposed:
        port, _, proto = str(key).partition("/")
        proto = (proto or "tcp").lower()
        if proto not in _PROTOS:
            continue  # an image's sctp EXPOSE must not make `run -P` fail
        start, end = _port_range(port, "exposed port")
        keys += [(p, proto) for p in range(start, end + 1)]
    out = []
    for port, proto in sorted(set(keys)):
        if (port, proto) not in bound:
            out.append(PortBinding(proto, "", 0, port))
    return out


# -- what we got ----------------------------------------------------------------------


@dataclass
class Reserved:
    """A published port whose host side is reserved (``sock`` holds it until
    handed to the keeper; records and views use the other fields only)."""

    proto: str
    host_ip: str  # "0.0.0.0" when every address
    host_port: int  # the real port (chosen by the kernel when asked for 0)
    container_port: int
    sock: socket.socket | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    @property
    def label(self) -> str:
        return f"{self.host_ip}:{self.host_port}/{self.proto}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "host_ip": self.host_ip,
            "host_port": self.host_port,
            "container_port": self.container_port,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reserved:
        return cls(
            str(d["proto"]), str(d["host_ip"]), int(d["host_port"]), int(d["container_port"])
        )


def close_all(reserved: Iterable[Reserved]) -> None:
    """Let go of reservations still held by this process (a failed start)."""
    for r in reserved:
        if r.sock is not None:
            r.sock.close()
            r.sock = None


def _check_overlaps(bindings: Sequence[PortBinding]) -> None:
    """The same host port twice in one call would "conflict" with ourselves."""
    seen: dict[tuple[str, int], set[str]] = {}
    for b in bindings:
        if b.host_port == 0 or b.host_port_end:
            continue
        ips = seen.setdefault((b.proto, b.host_port), set())
        ip = b.host_ip or "0.0.0.0"
        if ip in ips or (ips and (ip == "0.0.0.0" or "0.0.0.0" in ips)):
            raise InvalidArgument(
                f"host port {b.host_port}/{b.proto} is published twice", obj=str(b.host_port)
            )
        ips.add(ip)


# The child's side of reserve(): runs after fork (no imports, no locks).


def _open_one(b: PortBinding) -> socket.socket:
    ports = range(b.host_port, b.host_port_end + 1) if b.host_port_end else [b.host_port]
    for port in ports:
        tcp = b.proto == "tcp"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        try:
            if tcp:
                # As Go's (Podman's) listeners: TIME_WAIT leftovers must not block
                # us; a live listener still does. Not for UDP, where it would let
                # another SO_REUSEADDR socket share the port.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((b.host_ip or "0.0.0.0", port))
            if tcp:
                # Listening, not just bound: a bound-only socket does not stop a
                # SO_REUSEADDR server from taking the port, and is invisible in
                # /proc/net/tcp. The DNAT keeps connections away from it.
                s.listen(1)
            return s
        except OSError as e:
            s.close()
            if e.errno != errno.EADDRINUSE or port == ports[-1] or not b.host_port_end:
                raise
    raise AssertionError("unreachable")


def _listeners(proto: str, port: int) -> list[int]:
    """Socket inodes bound to ``port`` in this process's namespace (/proc/net)."""
    found: list[tuple[bool, int]] = []
    for name in (proto, proto + "6"):
        try:
            with open(f"/proc/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or int(cols[1].rsplit(":", 1)[1], 16) != port:
                continue
            inode = int(cols[9])
            if inode:
                # TCP: a listener first, before the accepted connections on that port.
                found.append((proto == "tcp" and cols[3] != "0A", inode))
    return [inode for _, inode in sorted(found)]


def _holder_of(inodes: list[int]) -> tuple[int, str] | None:
    """The (pid, comm) of a process holding one of these sockets (inodes are global)."""
    if not inodes:
        return None
    wanted = {f"socket:[{i}]": rank for rank, i in enumerate(inodes)}
    best: tuple[int, int, str] | None = None
    me = str(os.getpid())  # reserve()'s child shares its parent's fds: name the parent
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == me:
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                rank = wanted.get(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
            if rank is not None and (best is None or (rank, int(entry)) < best[:2]):
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    comm = "?"
                best = (rank, int(entry), comm)
                break
    return (best[1], best[2]) if best else None


def _bind_all(bindings: Sequence[PortBinding]) -> tuple[dict[str, Any], list[socket.socket]]:
    """Open every socket, or none: (report, sockets). Runs in the target namespace."""
    socks: list[socket.socket] = []
    for b in bindings:
        try:
            socks.append(_open_one(b))
            continue
        except OSError as e:
            err = e
        for s in socks:
            s.close()
        ip = b.host_ip if b.host_ip not in ("", "0.0.0.0") else ""
        if b.host_port_end:
            where = f"{ip + ':' if ip else ''}{b.host_port}-{b.host_port_end}/{b.proto}"
        else:
            where = f"{ip + ':' if ip else ''}{b.host_port}/{b.proto}"
        report: dict[str, Any] = {
            "ok": False,
            "errno": err.errno,
            "where": where,
            "range": bool(b.host_port_end),
        }
        if err.errno == errno.EADDRINUSE:
            report["kind"] = "conflict"
            holder = _holder_of(_listeners(b.proto, b.host_port)) if not b.host_port_end else None
            report["holder"] = list(holder) if holder else None
        elif err.errno == errno.EADDRNOTAVAIL:
            report["kind"] = "invalid"
        else:
            report["kind"] = "error"
            report["strerror"] = err.strerror or str(err)
        return report, []
    ports = [s.getsockname()[1] for s in socks]
    return {"ok": True, "ports": ports}, socks


def _send_result(sock: socket.socket, report: dict[str, Any], fds: list[int]) -> None:
    sock.sendall(json.dumps(report).encode())
    for i in range(0, len(fds), MAX_FDS):
        socket.send_fds(sock, [b"F"], fds[i : i + MAX_FDS])


def _recv_fds(sock: socket.socket, n: int) -> list[int]:
    got: list[int] = []
    try:
        while len(got) < n:
            data, fds, flags, _ = socket.recv_fds(sock, 16, MAX_FDS)
            got += fds
            if not data and not fds:
                raise EngineError("port reservation: the helper process ended early")
            if flags & socket.MSG_CTRUNC:
                raise EngineError("port reservation: file descriptors were lost in transit")
    except BaseException:
        for fd in got:
            os.close(fd)
        raise
    return got


def _reserve_child(nsfd: int, sock: socket.socket, bindings: Sequence[PortBinding]) -> None:
    """The forked child: setns, bind, send the sockets back; never returns."""
    code = 0
    try:
        if _libc.setns(nsfd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            report: dict[str, Any] = {"ok": False, "kind": "setns", "errno": e}
            socks: list[socket.socket] = []
        else:
            report, socks = _bind_all(bindings)
        _send_result(sock, report, [s.fileno() for s in socks])
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _in_netns(netns: str, bindings: Sequence[PortBinding]) -> tuple[dict[str, Any], list[int]]:
    from engine.netns import netns_path

    path = netns if netns.startswith("/") else str(netns_path(netns))
    try:
        nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"network namespace {netns} does not exist", obj=netns) from None
    # SEQPACKET: the report and each batch of fds arrive as separate messages.
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
        if pid == 0:
            parent.close()
            _reserve_child(nsfd, child, bindings)
        child.close()
        try:
            parent.settimeout(60)
            raw = parent.recv(MAX_MSG)
            if not raw:
                raise EngineError(f"port reservation in {netns}: the helper process failed")
            report = json.loads(raw)
            fds = _recv_fds(parent, len(report.get("ports", [])))
        finally:
            _reap(pid)
    finally:
        parent.close()
        os.close(nsfd)
    return report, fds


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def reserve(bindings: Sequence[PortBinding], netns: str, eng: Any = None) -> list[Reserved]:
    """Bind every host port in the namespace (``""``: this process's own), all or none.

    Returns the reservations in the order of ``bindings`` with the real host
    ports. Raises Conflict naming the port and its holder ("port 8080/tcp is
    already in use by pid 1234 (python3)"); with ``eng`` a port held by this
    instance's keeper is also named by its container.
    """
    bindings = list(bindings)
    for b in bindings:
        if not isinstance(b, PortBinding) or b.proto not in _PROTOS:
            raise InvalidArgument(f"invalid port binding {b!r}")
    _check_overlaps(bindings)
    if not bindings:
        return []
    if netns:
        report, fds = _in_netns(netns, bindings)
        socks = [socket.socket(fileno=fd) for fd in fds]
    else:
        report, socks = _bind_all(bindings)
    if not report.get("ok"):
        raise _reserve_error(report, netns, eng)
    return [
        Reserved(b.proto, b.host_ip or "0.0.0.0", port, b.container_port, s)
        for b, port, s in zip(bindings, report["ports"], socks, strict=True)
    ]


def _reserve_error(report: dict[str, Any], netns: str, eng: Any) -> EngineError:
    where, err = report.get("where", "?"), report.get("errno")
    if report["kind"] == "setns":
        return EngineError(f"cannot enter network namespace {netns} (errno {err})", errno=err)
    if report["kind"] == "invalid":
        ip = where.rsplit(":", 1)[0]
        return InvalidArgument(
            f"cannot publish port {where}: {ip} is not an address of the host", obj=where
        )
    if report["kind"] == "error":
        return EngineError(
            f"cannot reserve port {where}: {report.get('strerror')} (errno {err})",
            obj=where,
            errno=err,
        )
    if report.get("range"):
        return Conflict(f"no free host port in {where}: all are in use", obj=where, errno=err)
    holder = report.get("holder")
    msg = f"port {where} is already in use"
    if holder:
        pid, comm = holder
        msg += f" by pid {pid} ({comm})"
        owner = _keeper_owner(eng, pid, where) if eng is not None else None
        if owner:
            msg += f", published by container {owner}"
    return Conflict(msg, obj=where, errno=err)


def _keeper_owner(eng: Any, pid: int, where: str) -> str | None:
    """The container whose published port the keeper holds, if it is the holder."""
    from engine import helpers

    try:
        h = helpers.running(eng, KEEPER)
        if h is None or h.pid != pid:
            return None
        port_proto = where.rsplit(":", 1)[-1]
        for cid, labels in held(eng).items():
            if any(label.rsplit(":", 1)[-1] == port_proto for label in labels):
                row = eng.db.one("SELECT name FROM containers WHERE id=?", (cid,))
                return row["name"] if row else cid[:12]
    except EngineError:
        return None
    return None


# -- the views ------------------------------------------------------------------------


def port_specs(reserved: Iterable[Reserved], container_ip: str, bridge: str) -> list:
    """The nft.PortSpec rules for one container's endpoint (all its published ports)."""
    from engine.network.nft import PortSpec

    return [
        PortSpec(
            r.proto,  # type: ignore[arg-type]
            "" if r.host_ip in ("", "0.0.0.0") else r.host_ip,
            r.host_port,
            container_ip,
            r.container_port,
            bridge,
        )
        for r in reserved
    ]


def _exposed_only(reserved: Sequence[Reserved], exposed: Iterable[str]) -> list[tuple[int, str]]:
    published = {(r.container_port, r.proto) for r in reserved}
    out = []
    for key in exposed:
        port, _, proto = str(key).partition("/")
        if port.isdigit() and (int(port), proto or "tcp") not in published:
            out.append((int(port), proto or "tcp"))
    return out


def format_ports(reserved: Sequence[Reserved], exposed: Iterable[str] = ()) -> str:
    """The PORTS column of ``ps``, as the docker CLI prints it (DisplayablePorts):
    sorted by container port, identity mappings grouped into ranges
    ("0.0.0.0:8000-8002->8000-8002/tcp"), others one by one at the end, exposed
    ports that are not published as "443/tcp"."""
    # (private, ip, public, proto); ip "" = exposed only.
    rows = [(r.container_port, r.host_ip or "0.0.0.0", r.host_port, r.proto) for r in reserved]
    rows += [(p, "", 0, proto) for p, proto in _exposed_only(reserved, exposed)]
    rows.sort()
    groups: dict[str, list[int]] = {}  # key -> [first, last]; insertion order kept
    result: list[str] = []
    mappings: list[str] = []
    for private, ip, public, proto in rows:
        if ip and public != private:
            mappings.append(f"{ip}:{public}->{private}/{proto}")
            continue
        key = f"{ip}/{proto}" if ip else proto
        g = groups.get(key)
        if g is None:
            groups[key] = [private, private]
        elif private == g[1] + 1:
            g[1] = private
        else:
            result.append(_form_group(key, *g))
            groups[key] = [private, private]
    result += [_form_group(key, *g) for key, g in groups.items()]
    return ", ".join(result + mappings)


def _form_group(key: str, first: int, last: int) -> str:
    ip, _, proto = key.rpartition("/")
    group = str(first) if first == last else f"{first}-{last}"
    return f"{ip}:{group}->{group}/{proto}" if ip else f"{group}/{proto}"


def inspect_ports(reserved: Sequence[Reserved], exposed: Iterable[str] = ()) -> dict:
    """``NetworkSettings.Ports``: ``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort":
    "8080"}], "443/tcp": None}`` (exposed but not published -> null)."""
    out: dict[str, list[dict[str, str]] | None] = {}
    for r in sorted(reserved, key=lambda r: (r.container_port, r.proto, r.host_ip, r.host_port)):
        entries = out.setdefault(r.key, [])
        assert entries is not None
        entries.append({"HostIp": r.host_ip or "0.0.0.0", "HostPort": str(r.host_port)})
    for port, proto in sorted(_exposed_only(reserved, exposed)):
        out.setdefault(f"{port}/{proto}", None)
    return out


def port_bindings_config(bindings: Iterable[PortBinding]) -> dict:
    """``HostConfig.PortBindings``: what was asked for (HostPort "" = random)."""
    out: dict[str, list[dict[str, str]]] = {}
    for b in bindings:
        hp = "" if not b.host_port else str(b.host_port)
        if b.host_port_end:
            hp += f"-{b.host_port_end}"
        out.setdefault(b.key, []).append({"HostIp": b.host_ip, "HostPort": hp})
    return out


def port_lines(
    reserved: Sequence[Reserved], private: str | None = None, name: str = ""
) -> list[str]:
    """``berth port CONTAINER [PRIVATE_PORT[/PROTO]]`` output lines, as docker port:
    "80/tcp -> 0.0.0.0:8080", or with PRIVATE_PORT just "0.0.0.0:8080"."""
    rows = sorted(reserved, key=lambda r: (r.container_port, r.proto, r.host_ip, r.host_port))
    if private is None:
        return [f"{r.key} -> {r.host_ip or '0.0.0.0'}:{r.host_port}" for r in rows]
    port_s, _, proto = private.partition("/")
    proto = (proto or "tcp").lower()
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535 or proto not in (*_PROTOS, "sctp"):
        raise InvalidArgument(f"invalid port {private!r}: PORT[/tcp|udp]", obj=private)
    key = f"{int(port_s)}/{proto}"
    lines = [f"{r.host_ip or '0.0.0.0'}:{r.host_port}" for r in rows if r.key == key]
    if not lines:
        raise NotFound(f"No public port '{key}' published for {name}", obj=name)
    return lines


# -- the keeper: client side ----------------------------------------------------------


class _KeeperGone(Exception):
    """The keeper went away mid-request (it retired or was stopped): try again."""


def socket_path(eng: Any) -> Path:
    return eng.config.run / "ports.sock"


def ensure_keeper(eng: Any) -> int:
    """Start this instance's port keeper unless a live one is recorded; its pid."""
    from engine import helpers

    return helpers.ensure(eng, KEEPER, helpers.python_argv("engine.network.ports", eng))


def _connect(path: Path, pid: int) -> socket.socket:
    from engine.runtime.oci import pid_alive

    deadline = time.monotonic() + CONNECT_WAIT
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.connect(str(path))
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            # A keeper that was just spawned has not bound its socket yet.
            if not pid_alive(pid) or time.monotonic() > deadline:
                raise _KeeperGone() from None
            time.sleep(0.01)
        except BaseException:
            s.close()
            raise


def _exchange(eng: Any, pid: int, req: dict[str, Any], fds: Sequence[int]) -> dict[str, Any]:
    s = _connect(socket_path(eng), pid)
    try:
        s.settimeout(REPLY_WAIT)
        try:
            socket.send_fds(s, [json.dumps(req).encode()], list(fds))
            raw = s.recv(MAX_MSG)
        except (ConnectionResetError, BrokenPipeError):
            raise _KeeperGone() from None
        except TimeoutError:
            raise EngineError(f"port keeper (pid {pid}) did not answer", obj=KEEPER) from None
    finally:
        s.close()
    if not raw:
        raise _KeeperGone()
    reply = json.loads(raw)
    if not reply.get("ok"):
        raise EngineError(f"port keeper: {reply.get('error')}", obj=KEEPER)
    return reply


def _request(
    eng: Any, req: dict[str, Any], fds: Sequence[int] = (), start: bool = True
) -> dict[str, Any] | None:
    """Send one request; None when no keeper runs and ``start`` is false."""
    from engine import helpers

    for _ in range(5):
        if start:
            pid = ensure_keeper(eng)
        else:
            h = helpers.running(eng, KEEPER)
            if h is None:
                return None
            pid = h.pid
        try:
            return _exchange(eng, pid, req, fds)
        except _KeeperGone:
            continue  # it retired between ensure() and connect(): the next ensure() starts one
    if not start:
        return None
    raise EngineError("port keeper did not start (see its log under <run>/helpers)", obj=KEEPER)


def hold(eng: Any, container_id: str, reserved: Sequence[Reserved | socket.socket]) -> None:
    """Hand the reserved sockets to the keeper, which holds them for the container.

    Afterwards this process's own copies are closed (``Reserved.sock`` becomes
    None). On failure the caller's copies stay open: close_all() them.
    """
    socks: list[socket.socket] = []
    labels: list[str] = []
    for r in reserved:
        s = r.sock if isinstance(r, Reserved) else r
        if s is None:
            raise InvalidArgument(f"port {r.label} is not held by this process", obj=container_id)
        socks.append(s)
        if isinstance(r, Reserved):
            labels.append(r.label)
        else:
            ip, port = s.getsockname()[:2]
            labels.append(f"{ip}:{port}/{'tcp' if s.type == socket.SOCK_STREAM else 'udp'}")
    try:
        for i in range(0, len(socks), MAX_FDS):
            chunk = socks[i : i + MAX_FDS]
            req = {"op": "hold", "cid": container_id, "labels": labels[i : i + MAX_FDS]}
            _request(eng, req, [s.fileno() for s in chunk])
    except BaseException:
        if len(socks) > MAX_FDS:
            release(eng, container_id)  # all or nothing for a multi-message hold
        raise
    for r in reserved:
        if isinstance(r, Reserved):
            close_all([r])
        else:
            r.close()


def release(eng: Any, container_id: str) -> list[str]:
    """Let the container's host ports go (idempotent); the labels released."""
    reply = _request(eng, {"op": "release", "cid": container_id}, start=False)
    return list(reply.get("released", [])) if reply else []


def held(eng: Any) -> dict[str, list[str]]:
    """What the keeper holds: {container id: ["0.0.0.0:8080/tcp", ...]}."""
    reply = _request(eng, {"op": "held"}, start=False)
    return dict(reply.get("held", {})) if reply else {}


def rehold(eng: Any, container_id: str, reserved: Sequence[Reserved], netns: str) -> bool:
    """Reserve and hold a running container's recorded ports again if the keeper
    lost them (it died; ``system boot``). True if it had to."""
    if container_id in held(eng) or not reserved:
        return False
    again = reserve(
        [PortBinding(r.proto, r.host_ip, r.host_port, r.container_port) for r in reserved],
        netns,
        eng,
    )
    try:
        hold(eng, container_id, again)
    finally:
        close_all(again)
    return True


# -- the keeper: server side ------------------------------------------------------------


class Keeper:
    def __init__(self, eng: Any):
        self.eng = eng
        self.path = socket_path(eng)
        self.held: dict[str, list[tuple[str, socket.socket]]] = {}
        self.stopping = False
        self.ino = -1  # our socket file's inode: we unlink only our own
        try:
            self.idle_exit = float(os.environ.get(IDLE_EXIT_ENV) or IDLE_EXIT)
        except ValueError:
            self.idle_exit = IDLE_EXIT
        from engine import helpers

        self.db_ino = helpers.db_inode(eng)

    def run(self) -> int:
        from engine import helpers

        _libc.prctl(PR_SET_NAME, ctypes.c_char_p(KEEPER_COMM), 0, 0, 0)
        # Every held port is an fd: take the whole hard limit.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        lsock = self._listen()
        idle_since = last_reconcile = last_owner = t0 = time.monotonic()
        try:
            while not self.stopping:
                ready, _, _ = select.select([lsock], [], [], TICK)
                if ready:
                    self._serve(lsock)
                now = time.monotonic()
                if self.held:
                    idle_since = now
                if self.held and now - last_reconcile >= RECONCILE:
                    last_reconcile = now
                    self._reconcile()
                if now - last_owner >= OWNER_CHECK and now - t0 >= OWNER_CHECK:
                    last_owner = now
                    if not self._still_owner():
                        return 0
                if not self.held and now - idle_since >= self.idle_exit and self._retire(lsock):
                    return 0
        finally:
            lsock.close()
            self._unlink_ours()
            for cid in list(self.held):
                self._drop(cid)
            helpers.deregister(self.eng, KEEPER, os.getpid())
        return 0

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def _listen(self) -> socket.socket:
        """Bind under a private name, then rename over the public one: a client
        never finds a half-made socket, and a stale one is replaced atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.bind(str(tmp))
        os.chmod(tmp, 0o600)
        s.listen(64)
        self.ino = os.stat(tmp).st_ino
        os.rename(tmp, self.path)
        return s

    def _unlink_ours(self) -> None:
        try:
            if os.stat(self.path).st_ino == self.ino:
                os.unlink(self.path)
        except OSError:
            pass

    def _serve(self, lsock: socket.socket) -> None:
        conn, _ = lsock.accept()
        fds: list[int] = []
        try:
            conn.settimeout(5)
            uid = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            data, fds, flags, _ = socket.recv_fds(conn, MAX_MSG, MAX_FDS)
            if int.from_bytes(uid[4:8], sys.byteorder) not in (0, os.getuid()):
                reply: dict[str, Any] = {"ok": False, "error": "permission denied"}
            elif flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
                reply = {"ok": False, "error": "request truncated"}
            else:
                reply = self._handle(json.loads(data), fds)
                fds = []  # taken over (or closed) by _handle
            conn.sendall(json.dumps(reply).encode())
        except (OSError, ValueError) as e:
            print(f"port keeper: bad request: {e}", file=sys.stderr, flush=True)
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()

    def _handle(self, req: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        op, cid = req.get("op"), str(req.get("cid") or "")
        if op == "hold":
            labels = [str(x) for x in req.get("labels") or []]
            if not cid or len(labels) != len(fds):
                for fd in fds:
                    os.close(fd)
                return {"ok": False, "error": f"hold: {len(labels)} labels for {len(fds)} fds"}
            entries = self.held.setdefault(cid, [])
            entries += [
                (lab, socket.socket(fileno=fd)) for lab, fd in zip(labels, fds, strict=True)
            ]
            return {"ok": True}
        for fd in fds:
            os.close(fd)
        if op == "release":
            return {"ok": True, "released": self._drop(cid)}
        if op == "held":
            return {"ok": True, "held": {c: [lab for lab, _ in e] for c, e in self.held.items()}}
        return {"ok": False, "error": f"unknown request {op!r}"}

    def _drop(self, cid: str) -> list[str]:
        entries = self.held.pop(cid, [])
        for _, s in entries:
            s.close()
        return [lab for lab, _ in entries]

    def _reconcile(self) -> None:
        """Ports of containers whose row is gone (removed without a release) go."""
        try:
            ids = {r["id"] for r in self.eng.db.query("SELECT id FROM containers")}
        except Exception as e:  # a busy database must not end the keeper
            print(f"port keeper: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return
        for cid in [c for c in self.held if c not in ids]:
            print(f"port keeper: container {cid[:12]} is gone: {self._drop(cid)}", flush=True)

    def _retire(self, lsock: socket.socket) -> bool:
        """Exit when idle, under the helper lock so that ensure_keeper() either sees
        us gone or sees us stay. A client that connected meanwhile keeps us."""
        from engine import helpers
        from engine.locks import file_lock

        with file_lock(helpers.lock_path(self.eng, KEEPER), timeout=60):
            if self.held or select.select([lsock], [], [], 0)[0]:
                return False
            lsock.close()  # a client connecting now gets reset and retries
            self._unlink_ours()
            helpers.deregister(self.eng, KEEPER, os.getpid())
            return True

    def _still_owner(self) -> bool:
        from engine import helpers

        # A deleted root means nobody can release us any more.
        return helpers.still_owner(self.eng, KEEPER, self.db_ino)


def main(argv: list[str] | None = None) -> int:
    from engine import helpers
    from engine.api import Engine

    _args, config = helpers.parse_helper_args(argv, "berth-ports", "Berth's port keeper")
    eng = Engine(config, actor="berth-ports")
    return Keeper(eng).run()


if __name__ == "__main__":
    sys.exit(main())
