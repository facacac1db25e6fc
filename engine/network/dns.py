"""Berth's DNS resolver for user-defined bridge networks (DESIGN.md, "Long-lived helpers").

One helper process per engine instance (aardvark-dns style; engine.network.resolver
starts, reloads and stops it). It lives in the engine's "host" network namespace
and listens on port 53 (UDP and TCP) of every user-defined bridge network's
gateway address. A query that arrives on network N's gateway is answered from N's
containers only -- their names, ``name.N``, 12-character IDs and
``--network-alias`` names -- so a network never learns another network's names
(isolation), and a client whose source address is outside N's subnet is refused
(a container of network M could otherwise route a query to N's gateway). The
default ``bridge`` network gets no listener: on Docker its containers do not
resolve each other by name either.

Everything else is forwarded, packet unchanged, to the host's upstream servers
(/etc/resolv.conf, or ``BERTH_DNS_UPSTREAM``). When no upstream exists (none
configured, or an ``--internal`` network, which has no way out) an unknown name
gets NXDOMAIN at once: nobody could know it, and SERVFAIL would only make stub
resolvers retry. An upstream that fails or times out gives SERVFAIL.

The process is single-threaded (a selector loop), so it may ``setns`` into the
host namespace at its very start. State comes from the SQLite database: it is
re-read when ``PRAGMA data_version`` says another connection committed (checked
every ``POLL`` seconds and on every name we do not know, so a container started a
moment ago is found even before its SIGHUP arrives), and on SIGHUP.

The wire format is built and parsed here with ``struct`` (no third-party DNS
library): the helper must start fast and the subset we need is small.
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import json
import os
import secrets
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# -- the wire format (RFC 1035) ----------------------------------------------------------

HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength (after the owner name)
QTYPE_A, QTYPE_PTR, QTYPE_AAAA, QTYPE_ANY = 1, 12, 28, 255
CLASS_IN, CLASS_ANY = 1, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
OPCODE_MASK = 0x7800
UDP_MAX = 512  # without EDNS a UDP answer must fit in 512 bytes (else TC, client retries TCP)
TCP_MAX = 65535
# Containers come and go; a cached answer would outlive them. aardvark-dns uses 0 too.
TTL = 0
# A pointer to the question's name, which always starts right after the header.
_NAME_PTR = b"\xc0\x0c"


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str  # lower case, no trailing dot ("" for the root)
    qtype: int
    qclass: int
    question: bytes  # the question section as received: echoed (0x20 case included)

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11


def parse_query(data: bytes) -> Query | None:
    """The single question of a DNS query; None for anything malformed (dropped
    without an answer: we cannot trust even its ID) or for a response (a reply
    to a reply could loop between two resolvers)."""
    if len(data) < HEADER.size:
        return None
    qid, flags, qdcount, _, _, _ = HEADER.unpack_from(data)
    if flags & QR or qdcount != 1:
        return None
    pos, labels, size = HEADER.size, [], 0
    while True:
        if pos >= len(data):
            return None
        n = data[pos]
        pos += 1
        if n == 0:
            break
        # 0xC0.. is a compression pointer, 0x40/0x80 reserved label types: none
        # belongs in a query's only name (there is nothing before it to point to).
        if n > 63 or pos + n > len(data):
            return None
        label = data[pos : pos + n]
        if b"." in label:
            return None  # would alias a multi-label name once joined
        labels.append(label)
        pos += n
        size += n + 1
        if size > 254:
            return None
    if pos + 4 > len(data):
        return None
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    name = b".".join(labels).decode("ascii", "replace").lower()
    return Query(qid, flags, name, qtype, qclass, data[HEADER.size : pos + 4])


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode("ascii", "replace")[:63]
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def build_response(
    q: Query,
    rcode: int = NOERROR,
    addrs: Iterable[str] = (),
    ptr: str = "",
    ttl: int = TTL,
    limit: int = UDP_MAX,
    authoritative: bool = True,
) -> bytes:
    """An answer to ``q``: A records for ``addrs`` and/or one PTR record; answers
    that do not fit in ``limit`` bytes are left out and TC is set."""
    flags = QR | (q.flags & (OPCODE_MASK | RD)) | RA | (AA if authoritative else 0) | rcode
    rrs = [_NAME_PTR + RR.pack(QTYPE_A, CLASS_IN, ttl, 4) + socket.inet_aton(a) for a in addrs]
    if ptr:
        rdata = encode_name(ptr)
        rrs.append(_NAME_PTR + RR.pack(QTYPE_PTR, CLASS_IN, ttl, len(rdata)) + rdata)
    size, kept = HEADER.size + len(q.question), []
    for rr in rrs:
        if size + len(rr) > limit:
            flags |= TC
            break
        kept.append(rr)
        size += len(rr)
    return HEADER.pack(q.id, flags, 1, len(kept), 0, 0) + q.question + b"".join(kept)


def build_query(name: str, qtype: int = QTYPE_A, qid: int | None = None) -> bytes:
    """A recursive query (for tests, the network doctor and benchmarks)."""
    qid = secrets.randbelow(65536) if qid is None else qid
    return HEADER.pack(qid, RD, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)


@dataclass(frozen=True)
class Response:
    id: int
    flags: int
    rcode: int
    addrs: list[str]  # the A records' addresses, in order
    names: list[str]  # the PTR records' targets


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        n = data[pos]
        if n >= 0xC0:
            return pos + 2
        if n == 0:
            return pos + 1
        pos += n + 1


def _read_name(data: bytes, pos: int) -> str:
    labels: list[str] = []
    for _ in range(128):  # bounded: a pointer loop must not hang a client
        n = data[pos]
        if n >= 0xC0:
            pos = ((n & 0x3F) << 8) | data[pos + 1]
            continue
        if n == 0:
            break
        labels.append(data[pos + 1 : pos + 1 + n].decode("ascii", "replace"))
        pos += n + 1
    return ".".join(labels)


def parse_response(data: bytes) -> Response:
    """Header, rcode, A addresses and PTR names of a response (ValueError if malformed)."""
    try:
        qid, flags, qd, an, _, _ = HEADER.unpack_from(data)
        pos = HEADER.size
        for _ in range(qd):
            pos = _skip_name(data, pos) + 4
        addrs, names = [], []
        for _ in range(an):
            pos = _skip_name(data, pos)
            rtype, _, _, rdlen = RR.unpack_from(data, pos)
            pos += RR.size
            if rtype == QTYPE_A and rdlen == 4:
                addrs.append(socket.inet_ntoa(data[pos : pos + 4]))
            elif rtype == QTYPE_PTR:
                names.append(_read_name(data, pos))
            pos += rdlen
    except (IndexError, struct.error) as e:
        raise ValueError(f"malformed DNS response: {e}") from None
    return Response(qid, flags, flags & 0xF, addrs, names)


def query(
    server: str, name: str, qtype: int = QTYPE_A, port: int = 53, timeout: float = 2.0
) -> Response | None:
    """One UDP query; the Response, or None on timeout or an ICMP refusal."""
    data = build_query(name, qtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((server, port))
            s.send(data)
            while True:
                reply = s.recv(TCP_MAX)
                if reply[:2] == data[:2]:
                    try:
                        return parse_response(reply)
                    except ValueError:
                        continue  # garbage with our ID: wait for the real answer
        except OSError:  # timeout, ECONNREFUSED (nothing listens)
            return None


# -- what a network knows ----------------------------------------------------------------


@dataclass
class Zone:
    """The names of one user-defined network, as its resolver answers them."""

    id: str
    name: str
    gateway: str
    subnet: ipaddress.IPv4Network
    internal: bool = False
    names: dict[str, list[str]] = field(default_factory=dict)  # lower-case name -> addresses
    ptrs: dict[str, str] = field(default_factory=dict)  # address -> "container.network"

    def add(self, ip: str, primary: str, names: Iterable[str]) -> None:
        net = self.name.lower()
        for n in names:
            n = n.strip("/").rstrip(".").lower()
            if not n:
                continue
            for key in (n, f"{n}.{net}"):  # Docker resolves "name.network" too
                ips = self.names.setdefault(key, [])
                if ip not in ips:
                    ips.append(ip)
        self.ptrs.setdefault(ip, f"{primary.strip('/')}.{self.name}")

    def admits(self, client_ip: str) -> bool:
        try:
            return ipaddress.ip_address(client_ip) in self.subnet
        except ValueError:
            return False


def _ptr_address(name: str) -> str | None:
    """ "4.3.2.1.in-addr.arpa" -> "1.2.3.4"."""
    if not name.endswith(".in-addr.arpa"):
        return None
    parts = name[: -len(".in-addr.arpa")].split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return None
    return ".".join(reversed(parts))


def answer(zone: Zone, q: Query, can_forward: bool, limit: int = UDP_MAX) -> bytes | None:
    """The response for ``q`` on ``zone``, or None when it must be forwarded."""
    if q.opcode != 0:
        return build_response(q, NOTIMP, authoritative=False)
    if q.qclass not in (CLASS_IN, CLASS_ANY):
        return build_response(q, REFUSED, authoritative=False)
    addrs = zone.names.get(q.name)
    if addrs is not None:
        if q.qtype in (QTYPE_A, QTYPE_ANY):
            return build_response(q, addrs=addrs, limit=limit)
        # NODATA: the name is ours and has no record of this type (AAAA, MX...).
        # Forwarding it would get an NXDOMAIN that makes resolvers drop the A too.
        return build_response(q, limit=limit)
    ptr = _ptr_address(q.name) if q.qtype in (QTYPE_PTR, QTYPE_ANY) else None
    if ptr is not None and zone.admits(ptr):
        # Our own subnet: nobody upstream knows its reverse names.
        target = zone.ptrs.get(ptr, "")
        return build_response(q, NOERROR if target else NXDOMAIN, ptr=target, limit=limit)
    if not can_forward:
        return build_response(q, NXDOMAIN, limit=limit)
    return None


# Running (or paused) containers' endpoints on user-defined bridge networks.
_ENDPOINTS_SQL = (
    "SELECT e.network_id, e.ip, e.aliases, c.id, c.name FROM endpoints e"
    " JOIN containers c ON c.id = e.container_id"
    " WHERE c.state IN ('running', 'paused') AND e.ip IS NOT NULL AND e.ip <> ''"
)


def load_zones(db) -> dict[str, Zone]:
    """Network ID -> Zone for every user-defined bridge network, from the state DB."""
    from engine.network import resolver, store

    store.ensure_schema(db)
    zones: dict[str, Zone] = {}
    for r in db.query(resolver.USER_NETWORKS_SQL):
        try:
            subnet = ipaddress.IPv4Network(r["subnet"], strict=False)
        except ValueError:
            continue  # not IPv4: nothing to listen on
        zones[r["id"]] = Zone(r["id"], r["name"], r["gateway"], subnet, bool(r["internal"]))
    for r in db.query(_ENDPOINTS_SQL):
        zone = zones.get(r["network_id"])
        if zone is not None:
            aliases = json.loads(r["aliases"] or "[]")
            zone.add(r["ip"], r["name"], [r["name"], r["id"][:12], *aliases])
    return zones


def load_peer_zones(db) -> dict[str, list[str]]:
    """Client address -> every user-defined network of the container that owns it.

    Docker (and aardvark) answer a container's query from all of its networks, not
    only from the one whose gateway it asked: a front/back pair of networks relies
    on that."""
    by_container: dict[str, list[str]] = {}
    ips: dict[str, str] = {}
    for r in db.query(_ENDPOINTS_SQL):
        by_container.setdefault(r["id"], []).append(r["network_id"])
        ips[r["ip"]] = r["id"]
    return {ip: by_container[cid] for ip, cid in ips.items()}


def load_client_upstreams(db) -> dict[str, list[tuple[str, int]]]:
    """Client address -> the --dns servers of the container that owns it (if any)."""
    out: dict[str, list[tuple[str, int]]] = {}
    sql = (
        "SELECT e.ip, c.config FROM endpoints e JOIN containers c ON c.id = e.container_id"
        " WHERE c.state IN ('running', 'paused') AND e.ip IS NOT NULL AND e.ip <> ''"
        # Only rows whose options name a server (state.py writes compact JSON).
        ' AND c.config LIKE \'%"dns":["%\''
    )
    for r in db.query(sql):
        try:
            servers = json.loads(r["config"])["opts"].get("dns") or []
        except (ValueError, KeyError, TypeError):
            continue
        if servers:
            out[r["ip"]] = [(ip, 53) for ip in servers]
    return out


# -- upstream servers --------------------------------------------------------------------

UPSTREAM_ENV = "BERTH_DNS_UPSTREAM"  # "none", or "IP[:PORT],[IPv6]:PORT,..."


def parse_upstreams(spec: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in spec.replace(" ", ",").split(","):
        item = item.strip()
        if not item or item == "none":
            continue
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif item.count(":") == 1:
            host, _, p = item.partition(":")
            port = int(p)
        ipaddress.ip_address(host)  # ValueError for a name: we are the resolver
        out.append((host, port))
    return out


def upstreams_from_resolv_conf(text: str, allow_loopback: bool) -> list[tuple[str, int]]:
    """The ``nameserver`` lines. Loopback servers are skipped unless the helper
    runs in the real host's namespace, where they are reachable (systemd-resolved's
    127.0.0.53); in a namespace the engine treats as its host they are not."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                ip = ipaddress.ip_address(parts[1].split("%")[0])
            except ValueError:
                continue
            if ip.is_loopback and not allow_loopback:
                continue
            out.append((str(ip), 53))
    return out[:3]  # resolv.conf(5): MAXNS


def host_upstreams(in_host_netns: bool) -> list[tuple[str, int]]:
    spec = os.environ.get(UPSTREAM_ENV)
    if spec is not None:
        return parse_upstreams(spec)
    try:
        text = Path("/etc/resolv.conf").read_text()
    except OSError:
        return []
    return upstreams_from_resolv_conf(text, allow_loopback=not in_host_netns)


# -- the server --------------------------------------------------------------------------

POLL = 0.5  # how often the database's data_version is checked
FORWARD_TIMEOUT = 2.0  # per upstream server
MAX_FORWARDS = 256  # queries in flight upstream (each holds a socket)
MAX_TCP = 64
TCP_IDLE = 10.0
IDLE_EXIT = 10.0  # exit after this long without any user-defined network
IDLE_EXIT_ENV = "BERTH_DNS_IDLE_EXIT"
OWNER_CHECK = 5.0
ERROR_EXIT = 60.0
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
Reply = Callable[[bytes], None]


def _log(msg: str) -> None:
    print(f"berth-dns: {msg}", file=sys.stderr, flush=True)


@dataclass
class _Listener:
    zone_id: str
    gateway: str
    socks: list[socket.socket]


@dataclass
class _Forward:
    raw: bytes
    query: Query
    reply: Reply
    upstreams: list[tuple[str, int]] = field(default_factory=list)
    index: int = 0  # which upstream server
    sock: socket.socket | None = None
    deadline: float = 0.0


@dataclass
class _TcpConn:
    sock: socket.socket
    zone_id: str
    client: str
    buf: bytearray = field(default_factory=bytearray)
    deadline: float = 0.0


class Server:
    def __init__(self, eng, upstreams: list[tuple[str, int]], port: int = 53):
        self.eng = eng
        self.upstreams = upstreams
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.zones: dict[str, Zone] = {}
        self.peer_zones: dict[str, list[str]] = {}
        self.client_upstreams: dict[str, list[tuple[str, int]]] = {}
        self.listeners: dict[str, _Listener] = {}
        self.forwards: dict[socket.socket, _Forward] = {}
        self.tcp: dict[socket.socket, _TcpConn] = {}
        self.stopping = False
        self.reload_asked = True
        self.bind_failed: set[str] = set()  # logged once each; retried every poll
        self.data_version = -1
        from engine import helpers

        self.db_ino = helpers.db_inode(eng)
        try:
            self.idle_exit = float(os.environ.get(IDLE_EXIT_ENV) or IDLE_EXIT)
        except ValueError:
            self.idle_exit = IDLE_EXIT

    # -- signals, readiness, exit ----------------------------------------------------------

    def _install_signals(self) -> None:
        # The handlers only set flags; the wakeup fd makes select() return at once.
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        self._wake = (r, w)
        signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        self.sel.register(r, selectors.EVENT_READ, self._drain_wakeup)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)

    def _on_hup(self, *_: object) -> None:
        self.reload_asked = True

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    def _drain_wakeup(self) -> None:
        try:
            while self._wake[0].recv(512):
                pass
        except OSError:
            pass

    def run(self) -> int:
        from engine import helpers
        from engine.network import resolver

        self._install_signals()
        ready = resolver.ready_path(self.eng)
        last_poll = last_owner = t0 = time.monotonic()
        idle_since: float | None = None
        failing_since: float | None = None
        try:
            self._reload()
            # Written once the first load is done and SIGHUP is handled: until then
            # reload_resolver leaves us alone (our first load sees everything anyway).
            ready.parent.mkdir(parents=True, exist_ok=True)
            ready.write_text(str(os.getpid()))
            while not self.stopping:
                now = time.monotonic()
                timeout = max(0.0, min([last_poll + POLL - now] + self._deadlines()))
                for key, _ in self.sel.select(timeout):
                    try:
                        key.data()
                    except Exception as e:  # one bad packet must not end the resolver
                        _log(f"{type(e).__name__}: {e}")
                now = time.monotonic()
                self._expire(now)
                if self.reload_asked or now - last_poll >= POLL:
                    last_poll = now
                    try:
                        self._poll()
                        failing_since = None
                    except Exception as e:  # a busy database must not end us...
                        _log(f"reload failed: {type(e).__name__}: {e}")
                        failing_since = failing_since or now
                        if now - failing_since > ERROR_EXIT:
                            return 1  # ...but a broken one must not keep us forever
                if self.zones:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= self.idle_exit and self._retire():
                    return 0
                if now - last_owner >= OWNER_CHECK and now - t0 >= OWNER_CHECK:
                    last_owner = now
                    if not self._still_owner():
                        return 0
        finally:
            self._close_all()
            try:
                if ready.read_text() == str(os.getpid()):
                    ready.unlink()
            except OSError:
                pass
            helpers.deregister(self.eng, resolver.NAME, os.getpid())
        return 0

    def _retire(self) -> bool:
        """Exit when idle, unless a network appeared meanwhile; under the helper
        lock, so ensure_resolver either sees us gone or sees us stay."""
        from engine import helpers
        from engine.locks import file_lock
        from engine.network import resolver

        with file_lock(helpers.lock_path(self.eng, resolver.NAME), timeout=60):
            if resolver.needed(self.eng):
                self.reload_asked = True
                return False
            helpers.deregister(self.eng, resolver.NAME, os.getpid())
            return True

    def _still_owner(self) -> bool:
        """Replaced or forgotten (helpers.stop), or our root deleted: exit, so two
        resolvers never fight over the same ports."""
        from engine import helpers
        from engine.network import resolver

        return helpers.still_owner(self.eng, resolver.NAME, self.db_ino)

    def _close_all(self) -> None:
        for lst in list(self.listeners.values()):
            self._close_listener(lst)
        for f in list(self.forwards.values()):
            self._drop_forward(f)
        for conn in list(self.tcp.values()):
            self._close_tcp(conn)

    # -- state -------------------------------------------------------------------------------

    def _changed(self) -> bool:
        """Did another connection commit since we last looked? (Cheap: no table read.)"""
        v = self.eng.db.one("PRAGMA data_version")[0]
        if v == self.data_version:
            return False
        self.data_version = v
        return True

    def _poll(self) -> None:
        if self._changed() or self.reload_asked or self.bind_failed:
            self._reload()

    def _reload(self) -> None:
        self.reload_asked = False
        self._changed()  # the version this load reflects (at least)
        self.zones = load_zones(self.eng.db)
        self.peer_zones = load_peer_zones(self.eng.db)
        self.client_upstreams = load_client_upstreams(self.eng.db)
        for zid, lst in list(self.listeners.items()):
            z = self.zones.get(zid)
            if z is None or z.gateway != lst.gateway:
                self._close_listener(lst)
        for zid, z in self.zones.items():
            if zid not in self.listeners:
                self._open_listener(z)

    def _open_listener(self, z: Zone) -> None:
        socks: list[socket.socket] = []
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                # FREEBIND: bind even while the bridge (and its address) is not up
                # yet, or is being re-made by `system boot`; packets flow once it is.
                s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                if kind == socket.SOCK_STREAM:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((z.gateway, self.port))
                if kind == socket.SOCK_STREAM:
                    s.listen(64)
                s.setblocking(False)
        except OSError as e:
            for s in socks:
                s.close()
            if z.id not in self.bind_failed:
                _log(f"network {z.name}: cannot listen on {z.gateway}:{self.port}: {e}")
            self.bind_failed.add(z.id)
            return
        self.bind_failed.discard(z.id)
        udp, tcp = socks
        self.sel.register(udp, selectors.EVENT_READ, functools.partial(self._on_udp, z.id, udp))
        self.sel.register(tcp, selectors.EVENT_READ, functools.partial(self._on_accept, z.id, tcp))
        self.listeners[z.id] = _Listener(z.id, z.gateway, socks)

    def _close_listener(self, lst: _Listener) -> None:
        for s in lst.socks:
            self.sel.unregister(s)
            s.close()
        self.listeners.pop(lst.zone_id, None)

    # -- queries -----------------------------------------------------------------------------

    def _on_udp(self, zone_id: str, sock: socket.socket) -> None:
        for _ in range(64):  # a burst, without starving the other sockets
            try:
                data, addr = sock.recvfrom(TCP_MAX)
            except OSError:  # drained, or closed by a reload during this burst
                return

            def reply(resp: bytes, addr=addr) -> None:
                try:
                    sock.sendto(resp, addr)
                except OSError:
                    pass

            self._handle(zone_id, data, addr[0], reply, UDP_MAX)

    def _handle(self, zone_id: str, data: bytes, client: str, reply: Reply, limit: int) -> None:
        q = parse_query(data)
        zone = self.zones.get(zone_id)
        if q is None or zone is None:
            return
        if not zone.admits(client) and not _is_local(client):
            reply(build_response(q, REFUSED, authoritative=False))
            return
        if q.name not in zone.names and self._changed():
            # Perhaps a container that started a moment ago: look before forwarding.
            self._reload()
            zone = self.zones.get(zone_id)
            if zone is None:
                return
        # A container run with --dns forwards to its own servers (Docker's embedded DNS
        # does the same); everyone else to the host's.
        upstreams = self.client_upstreams.get(client) or self.upstreams
        can_forward = bool(upstreams) and not zone.internal
        if q.name not in zone.names:
            # The asking container's other networks know names this one does not.
            for zid in self.peer_zones.get(client, ()):
                other = self.zones.get(zid)
                if other is not None and q.name in other.names:
                    zone = other
                    break
        resp = answer(zone, q, can_forward, limit)
        if resp is not None:
            reply(resp)
        elif len(self.forwards) >= MAX_FORWARDS:
            reply(build_response(q, SERVFAIL, authoritative=False))
        else:
            self._send_upstream(_Forward(data, q, reply, upstreams))

    # -- forwarding --------------------------------------------------------------------------

    def _send_upstream(self, f: _Forward) -> None:
        """Send ``f`` to its next upstream server, or answer SERVFAIL if none is left.
        A fresh connected socket per query: a random source port, and only that
        server's packets are read (spoofing a reply needs both ID and port)."""
        while f.index < len(f.upstreams):
            host, port = f.upstreams[f.index]
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_DGRAM)
            try:
                s.setblocking(False)
                s.connect((host, port))
                s.send(f.raw)
            except OSError:
                s.close()
                f.index += 1
                continue
            f.sock, f.deadline = s, time.monotonic() + FORWARD_TIMEOUT
            self.forwards[s] = f
            self.sel.register(s, selectors.EVENT_READ, functools.partial(self._on_upstream, f))
            return
        f.reply(build_response(f.query, SERVFAIL, authoritative=False))

    def _on_upstream(self, f: _Forward) -> None:
        assert f.sock is not None
        try:
            data = f.sock.recv(TCP_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ECONNREFUSED: nothing listens there; try the next one now
            self._next_upstream(f)
            return
        if len(data) < HEADER.size or data[:2] != f.raw[:2] or not data[2] & 0x80:
            return  # not the answer to this query: keep waiting until the deadline
        self._drop_forward(f)
        f.reply(data)

    def _next_upstream(self, f: _Forward) -> None:
        self._drop_forward(f)
        f.index += 1
        self._send_upstream(f)

    def _drop_forward(self, f: _Forward) -> None:
        if f.sock is not None:
            self.forwards.pop(f.sock, None)
            self.sel.unregister(f.sock)
            f.sock.close()
            f.sock = None

    # -- TCP -----------------------------------------------------------------------------------

    def _on_accept(self, zone_id: str, sock: socket.socket) -> None:
        try:
            conn, addr = sock.accept()
        except OSError:
            return
        if len(self.tcp) >= MAX_TCP:
            conn.close()
            return
        conn.setblocking(False)
        c = _TcpConn(conn, zone_id, addr[0], deadline=time.monotonic() + TCP_IDLE)
        self.tcp[conn] = c
        self.sel.register(conn, selectors.EVENT_READ, functools.partial(self._on_tcp, c))

    def _on_tcp(self, c: _TcpConn) -> None:
        try:
            data = c.sock.recv(TCP_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_tcp(c)
            return
        c.buf += data
        c.deadline = time.monotonic() + TCP_IDLE
        while len(c.buf) >= 2:
            (n,) = struct.unpack_from("!H", c.buf)
            if len(c.buf) < 2 + n:
                break
            msg = bytes(c.buf[2 : 2 + n])
            del c.buf[: 2 + n]
            self._handle(c.zone_id, msg, c.client, functools.partial(self._tcp_send, c), TCP_MAX)

    def _tcp_send(self, c: _TcpConn, resp: bytes) -> None:
        if c.sock.fileno() < 0:
            return  # closed while the query was upstream
        try:
            # Answers are small; a short blocking send is simpler than write buffers.
            c.sock.settimeout(1.0)
            c.sock.sendall(struct.pack("!H", len(resp)) + resp)
            c.sock.setblocking(False)
        except OSError:
            self._close_tcp(c)

    def _close_tcp(self, c: _TcpConn) -> None:
        if self.tcp.pop(c.sock, None) is not None:
            self.sel.unregister(c.sock)
            c.sock.close()

    # -- timers ----------------------------------------------------------------------------------

    def _deadlines(self) -> list[float]:
        now = time.monotonic()
        ds = [f.deadline - now for f in self.forwards.values()]
        return [min(ds)] if ds else []

    def _expire(self, now: float) -> None:
        for f in list(self.forwards.values()):
            if now >= f.deadline:
                self._next_upstream(f)
        for c in list(self.tcp.values()):
            if now >= c.deadline:
                self._close_tcp(c)


def _is_local(addr: str) -> bool:
    """Is ``addr`` an address of this namespace (the host itself)? Such a source
    cannot come from a container: the kernel drops packets that arrive with a
    local source address (accept_local=0). The host's own tools may ask any
    network's resolver, and nft's masquerade may give their queries another
    local address than the gateway they asked. Binding is the kernel's answer
    (EADDRNOTAVAIL for a foreign address); only refused queries pay for it."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


# -- process entry -----------------------------------------------------------------------

CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Join the named namespace the engine treats as its host. setns applies to
    the calling thread only, so this is done first thing, while the process is
    still single-threaded (DESIGN.md: never setns in a threaded process)."""
    from engine.netns import netns_path

    if threading.active_count() != 1:
        raise RuntimeError("enter_netns needs a single-threaded process")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


class _Eng:
    """What the server needs of an engine (config + db), without importing the
    whole facade: the helper starts in the path of `berth run`."""

    def __init__(self, config):
        from engine.state import StateDB

        self.config = config
        self.db = StateDB(config.db_path)


def main(argv: list[str] | None = None) -> int:
    from engine import helpers

    args, config = helpers.parse_helper_args(
        argv,
        "berth-dns",
        "Berth's DNS resolver",
        lambda p: p.add_argument("--port", type=int, default=53),
    )
    if config.host_netns:
        enter_netns(config.host_netns)
    try:
        upstreams = host_upstreams(in_host_netns=bool(config.host_netns))
    except ValueError as e:
        _log(f"bad {UPSTREAM_ENV}: {e}")
        return 2
    _log(f"pid {os.getpid()}: upstream {upstreams or 'none'}")
    return Server(_Eng(config), upstreams, args.port).run()


if __name__ == "__main__":
    sys.exit(main())
