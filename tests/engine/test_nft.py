"""engine.network.nft and engine.network.sysctl against the real kernel.

Nothing here touches the real host's ruleset or sysctls: every test works in
network namespaces it made (``bt<hex><role>``), runs nft there through the
module's own ``netns`` argument, and deletes the namespaces afterwards (their
veths and bridges die with them). Traffic only flows between those
namespaces, on addresses the test assigned (10.96-10.99.0.0/24).

Topology used by the traffic tests (all inside the test's namespaces)::

    outside (10.98.0.2) --veth-- host: vout 10.98.0.1
                                 host: btbr0 10.99.0.1 -- c1 .2, c2 .3 (server)
                                 host: btbr1 10.97.0.1 -- c3 .2 (server)
                                 host: btbr2 10.96.0.1 -- c4 .2 (server, internal)
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from engine.errors import InvalidArgument, NotFound
from engine.netns import netns_path, run_in_netns
from engine.network import nft, sysctl
from engine.network.nft import NetSpec, PortSpec
from tests.conftest import add_host_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

TABLE = "bt" + secrets.token_hex(3)
NET_A = NetSpec("neta", "btbr0", "10.99.0.0/24")
NET_B = NetSpec("netb", "btbr1", "10.97.0.0/24")
NET_I = NetSpec("neti", "btbr2", "10.96.0.0/24", internal=True)
WEB = PortSpec("tcp", "", 8080, "10.99.0.3", 80, "btbr0")
DNS = PortSpec("udp", "10.98.0.1", 5353, "10.99.0.3", 53, "btbr0")
PROBE_TIMEOUT = 0.6


def _run(*cmd: str) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {p.returncode}: {p.stderr}")
    return p.stdout


def _ip(ns: str, *args: str) -> None:
    _run("ip", "-n", ns, *args)


def _nft_in(ns: str, command: str) -> str:
    return _run("ip", "netns", "exec", ns, "nft", *command.split())


def _new_ns(made: list[str], role: str) -> str:
    name = f"bt{secrets.token_hex(4)}{role}"
    add_host_netns(name)
    made.append(name)
    return name


def _delete_ns(made: list[str]) -> None:
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=20)


@pytest.fixture
def bare_ns() -> Iterator[str]:
    made: list[str] = []
    try:
        yield _new_ns(made, "n")
    finally:
        _delete_ns(made)


# -- the table itself -----------------------------------------------------------


def _comments(listing: dict, chain: str) -> list[str]:
    return [r["comment"] for r in listing["chains"][chain]["rules"]]


def test_sync_builds_table_and_replaces_it_atomically(bare_ns: str) -> None:
    assert not nft.table_exists(bare_ns, TABLE)
    ch = nft.sync(bare_ns, TABLE, [NET_A, NET_B], [WEB])
    assert ch.table_created and ch.changed and not ch.removed
    assert "postrouting: masquerade neta 10.99.0.0/24 out of btbr0" in ch.added
    assert "prerouting: dnat tcp *:8080 -> 10.99.0.3:80" in ch.added
    assert "set bridges: btbr1" in ch.added

    got = nft.list_rules(bare_ns, TABLE)
    assert got["exists"] and nft.table_exists(bare_ns, TABLE)
    assert {
        k: (c["type"], c["hook"], c["prio"], c["policy"]) for k, c in got["chains"].items()
    } == {
        "postrouting": ("nat", "postrouting", 100, "accept"),
        "prerouting": ("nat", "prerouting", -100, "accept"),
        "output": ("nat", "output", -100, "accept"),
        "forward": ("filter", "forward", 0, "accept"),
    }
    assert sorted(got["sets"]["bridges"]) == ["btbr0", "btbr1"]
    # The kernel's view matches the rendered one exactly.
    assert sorted(nft.rule_summaries(got)) == sorted(ch.added)

    # Same input again: nothing changes, nothing is duplicated.
    again = nft.sync(bare_ns, TABLE, [NET_A, NET_B], [WEB])
    assert not again.changed and not again.added and not again.removed
    assert nft.rule_summaries(nft.list_rules(bare_ns, TABLE)) == nft.rule_summaries(got)

    # A changed list: network B goes, a UDP port comes.
    ch2 = nft.sync(bare_ns, TABLE, [NET_A], [WEB, DNS])
    assert sorted(ch2.added) == [
        "output: dnat udp 10.98.0.1:5353 -> 10.99.0.3:53",
        "prerouting: dnat udp 10.98.0.1:5353 -> 10.99.0.3:53",
    ]
    assert "postrouting: masquerade netb 10.97.0.0/24 out of btbr1" in ch2.removed
    assert "forward: isolate btbr1 from other Berth bridges" in ch2.removed
    assert "set bridges: btbr1" in ch2.removed
    now = nft.list_rules(bare_ns, TABLE)
    assert _comments(now, "prerouting") == [
        "dnat tcp *:8080 -> 10.99.0.3:80",
        "dnat udp 10.98.0.1:5353 -> 10.99.0.3:53",
    ]
    assert now["sets"]["bridges"] == ["btbr0"]

    # teardown removes everything and can be repeated.
    down = nft.teardown(bare_ns, TABLE)
    assert down.table_removed and sorted(down.removed) == sorted(nft.rule_summaries(now))
    assert not nft.table_exists(bare_ns, TABLE)
    assert not nft.list_rules(bare_ns, TABLE)["exists"]
    assert not nft.teardown(bare_ns, TABLE).changed


def test_sync_heals_hand_edits_and_leaves_other_tables_alone(bare_ns: str) -> None:
    foreign = (
        "add table inet other\nadd chain inet other c { type filter hook forward priority 0; }\n"
    )
    foreign += "add rule inet other c tcp dport 22 accept\n"
    subprocess.run(
        ["ip", "netns", "exec", bare_ns, "nft", "-f", "-"], input=foreign, text=True, check=True
    )
    nft.sync(bare_ns, TABLE, [NET_A], [WEB])
    # Someone deletes our DNAT and adds a rule of their own to our table.
    listing = nft.list_rules(bare_ns, TABLE)
    handle = listing["chains"]["prerouting"]["rules"][0]["handle"]
    _nft_in(bare_ns, f"delete rule inet {TABLE} prerouting handle {handle}")
    _nft_in(bare_ns, f"add rule inet {TABLE} forward tcp dport 23 drop")

    ch = nft.sync(bare_ns, TABLE, [NET_A], [WEB])
    assert ch.added == ["prerouting: dnat tcp *:8080 -> 10.99.0.3:80"]
    assert len(ch.removed) == 1 and ch.removed[0].startswith("forward: no comment: ")
    nft.teardown(bare_ns, TABLE)
    out = _nft_in(bare_ns, "list ruleset")
    assert "table inet other" in out and "tcp dport 22 accept" in out and TABLE not in out


def test_bad_specs_are_refused_before_the_kernel_is_touched(bare_ns: str) -> None:
    bad = [
        ([NetSpec("x", 'br"0', "10.1.0.0/24")], []),
        ([NetSpec("x", "br0", "10.1.0.0/33")], []),
        ([NET_A], [PortSpec("tcp", "", 0, "10.99.0.3", 80, "btbr0")]),
        ([NET_A], [PortSpec("sctp", "", 80, "10.99.0.3", 80, "btbr0")]),  # type: ignore[arg-type]
        ([NET_A], [WEB, PortSpec("tcp", "0.0.0.0", 8080, "10.99.0.4", 80, "btbr0")]),
        ([NET_A, NetSpec("y", "btbr0", "10.2.0.0/24")], []),
    ]
    for nets, ports in bad:
        with pytest.raises(InvalidArgument):
            nft.sync(bare_ns, TABLE, nets, ports)
    with pytest.raises(InvalidArgument):
        nft.sync(bare_ns, "no-dashes", [], [])
    assert not nft.table_exists(bare_ns, TABLE)
    with pytest.raises(NotFound):
        nft.sync("bt0000000000n", TABLE, [], [])
    # A port on an internal network is not published, and says so.
    ch = nft.sync(bare_ns, TABLE, [NET_I], [PortSpec("tcp", "", 81, "10.96.0.2", 80, "btbr2")])
    assert ch.skipped == ["tcp *:81 -> 10.96.0.2:80: network neti is internal"]
    assert not any("dnat" in s for s in ch.added)
    nft.teardown(bare_ns, TABLE)


def test_sysctls_are_per_namespace(bare_ns: str) -> None:
    host_before = sysctl.get("", "net.ipv4.ip_forward")
    # A new netns copies IPv4 settings from the host's (net.core.devconf_inherit_init_net
    # = 0): start it from 0 whatever the host has.
    sysctl.set(bare_ns, "net.ipv4.ip_forward", "0")
    assert sysctl.get(bare_ns, "net.ipv4.ip_forward") == "0"
    assert not sysctl.ip_forward(bare_ns)
    assert sysctl.ensure_ip_forward(bare_ns) is True
    assert sysctl.ensure_ip_forward(bare_ns) is False
    assert sysctl.ip_forward(bare_ns)
    assert sysctl.route_localnet(bare_ns, "lo", True) is True
    assert sysctl.get(bare_ns, "net/ipv4/conf/lo/route_localnet") == "1"
    assert sysctl.route_localnet(bare_ns, "lo", False) is True
    assert sysctl.set(bare_ns, "net.ipv4.conf.lo.route_localnet", 0) is False
    with pytest.raises(NotFound):
        sysctl.get(bare_ns, "net.ipv4.conf.nosuchif.route_localnet")
    with pytest.raises(InvalidArgument):
        sysctl.get(bare_ns, "net/../../etc/passwd")
    assert sysctl.get("", "net.ipv4.ip_forward") == host_before


# -- rules that work: traffic between namespaces -----------------------------------

SERVER = r"""
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    def serve():
        while True:
            c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
    threading.Thread(target=serve, daemon=True).start()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    def serve():
        while True:
            _, peer = s.recvfrom(100); s.sendto(peer[0].encode(), peer)
    threading.Thread(target=serve, daemon=True).start()
for spec in sys.argv[1:]:
    proto, port = spec.split("/")
    (tcp if proto == "tcp" else udp)(int(port))
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass
class Topo:
    host: str
    outside: str
    c1: str
    c3: str
    c4: str


def _tcp_probe(ip: str, port: int) -> str | None:
    """Connect and return what the server says (the peer address it saw), or None."""
    try:
        with socket.create_connection((ip, port), timeout=PROBE_TIMEOUT) as s:
            s.settimeout(PROBE_TIMEOUT)
            return s.recv(100).decode() or None
    except OSError:
        return None


def _udp_probe(ip: str, port: int) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(PROBE_TIMEOUT)
        try:
            s.sendto(b"?", (ip, port))
            return s.recv(100).decode()
        except OSError:
            return None


def tcp(ns: str, ip: str, port: int) -> str | None:
    return run_in_netns(netns_path(ns), functools.partial(_tcp_probe, ip, port))


def udp(ns: str, ip: str, port: int) -> str | None:
    return run_in_netns(netns_path(ns), functools.partial(_udp_probe, ip, port))


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    made: list[str] = []
    servers: list[subprocess.Popen] = []
    try:
        host = _new_ns(made, "h")
        outside = _new_ns(made, "o")
        for br, gw in (("btbr0", "10.99.0.1"), ("btbr1", "10.97.0.1"), ("btbr2", "10.96.0.1")):
            _ip(host, "link", "add", br, "type", "bridge")
            _ip(host, "addr", "add", f"{gw}/24", "dev", br)
            _ip(host, "link", "set", br, "up")
        _ip(host, "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", outside)
        _ip(host, "addr", "add", "10.98.0.1/24", "dev", "vout")
        _ip(host, "link", "set", "vout", "up")
        _ip(outside, "addr", "add", "10.98.0.2/24", "dev", "eth0")
        _ip(outside, "link", "set", "eth0", "up")
        # The outside knows the way to every test subnet through the host, so
        # the internal network's "no way in" is the firewall's doing, not routing's.
        _ip(outside, "route", "add", "10.96.0.0/14", "via", "10.98.0.1")
        ctrs = {}
        for role, br, addr, gw in (
            ("c1", "btbr0", "10.99.0.2", "10.99.0.1"),
            ("c2", "btbr0", "10.99.0.3", "10.99.0.1"),
            ("c3", "btbr1", "10.97.0.2", "10.97.0.1"),
            ("c4", "btbr2", "10.96.0.2", "10.96.0.1"),
        ):
            ns = ctrs[role] = _new_ns(made, role)
            _ip(
                host, "link", "add", f"v{role}", "type", "veth", "peer", "name", "eth0", "netns", ns
            )
            _ip(host, "link", "set", f"v{role}", "master", br, "up")
            _ip(ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip(ns, "link", "set", "eth0", "up")
            _ip(ns, "route", "add", "default", "via", gw)
        assert sysctl.ensure_ip_forward(host) is True
        for ns, specs in (
            (ctrs["c2"], ["tcp/80", "udp/53"]),
            (ctrs["c3"], ["tcp/80"]),
            (ctrs["c4"], ["tcp/80"]),
            (outside, ["tcp/9000"]),
        ):
            p = subprocess.Popen(
                ["nsenter", f"--net={netns_path(ns)}", sys.executable, "-c", SERVER, *specs],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            servers.append(p)
        for p in servers:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield Topo(host, outside, ctrs["c1"], ctrs["c3"], ctrs["c4"])
    finally:
        for p in servers:
            p.kill()
            p.wait(timeout=10)
        _delete_ns(made)


def _bridge_nf(host: str, on: str) -> None:
    """Whether bridged frames pass through the inet hooks (br_netfilter).

    Hosts differ (Docker loads br_netfilter and turns it on), and it changes
    the path a hairpin DNAT takes, so the traffic tests run both ways.
    """
    try:
        sysctl.set(host, "net.bridge.bridge-nf-call-iptables", on)
    except NotFound:
        if on == "1":
            pytest.skip("br_netfilter is not loaded")


BRIDGE_NF = pytest.mark.parametrize("bridge_nf", ["0", "1"], ids=["plain", "br_netfilter"])


@BRIDGE_NF
def test_masquerade_and_published_ports(topo: Topo, bridge_nf: str) -> None:
    _bridge_nf(topo.host, bridge_nf)
    nft.sync(topo.host, TABLE, [NET_A, NET_B, NET_I], [WEB, DNS])
    try:
        # Outbound: the outside sees the host's address, not the container's.
        assert tcp(topo.c1, "10.98.0.2", 9000) == "10.98.0.1"
        # Published ports from outside: DNAT keeps the client's own address.
        assert tcp(topo.outside, "10.98.0.1", 8080) == "10.98.0.2"
        assert udp(topo.outside, "10.98.0.1", 5353) == "10.98.0.2"
        # Any local address of the host works for an all-addresses port...
        assert tcp(topo.outside, "10.99.0.1", 8080) == "10.98.0.2"
        # ...but a port bound to one address answers only there.
        assert udp(topo.outside, "10.99.0.1", 5353) is None
        # Hairpin: a neighbour on the same bridge, through the host's address.
        assert tcp(topo.c1, "10.99.0.1", 8080) == "10.99.0.1"
        assert tcp(topo.c1, "10.98.0.1", 8080) == "10.99.0.1"
        # A container on another network may use the published port too
        # (isolation spares DNAT'd connections); it leaves through btbr0, masqueraded.
        assert tcp(topo.c3, "10.97.0.1", 8080) == "10.99.0.1"
        # From the host itself (its own address is the source), and on
        # 127.0.0.1 once route_localnet is on (masqueraded: nothing answers 127.x).
        assert tcp(topo.host, "10.98.0.1", 8080) == "10.98.0.1"
        assert tcp(topo.host, "127.0.0.1", 8080) is None  # martian without route_localnet
        assert sysctl.route_localnet(topo.host, "btbr0", True) is True
        assert tcp(topo.host, "127.0.0.1", 8080) == "10.99.0.1"
        # Port gone from the spec: no more answer.
        nft.sync(topo.host, TABLE, [NET_A, NET_B, NET_I], [DNS])
        assert tcp(topo.outside, "10.98.0.1", 8080) is None
    finally:
        sysctl.route_localnet(topo.host, "btbr0", False)
        nft.teardown(topo.host, TABLE)


@BRIDGE_NF
def test_isolation_between_networks(topo: Topo, bridge_nf: str) -> None:
    _bridge_nf(topo.host, bridge_nf)
    try:
        nft.sync(topo.host, TABLE, [NET_A, NET_B], [])
        assert tcp(topo.c1, "10.97.0.2", 80) is None
        assert tcp(topo.c3, "10.99.0.3", 80) is None
        # Network B is no longer Berth's: nothing isolates it any more.
        ch = nft.sync(topo.host, TABLE, [NET_A], [])
        assert "forward: isolate btbr1 from other Berth bridges" in ch.removed
        assert tcp(topo.c1, "10.97.0.2", 80) == "10.97.0.1"  # masqueraded out of btbr0
    finally:
        nft.teardown(topo.host, TABLE)


@BRIDGE_NF
def test_internal_network_has_no_way_out_or_in(topo: Topo, bridge_nf: str) -> None:
    _bridge_nf(topo.host, bridge_nf)
    try:
        nft.sync(topo.host, TABLE, [NET_A, NET_I], [])
        assert tcp(topo.c4, "10.98.0.2", 9000) is None
        assert tcp(topo.outside, "10.96.0.2", 80) is None
        assert tcp(topo.c1, "10.96.0.2", 80) is None
        # Without the table the same paths are open: the drops above are ours.
        nft.teardown(topo.host, TABLE)
        assert tcp(topo.c4, "10.98.0.2", 9000) == "10.96.0.2"
        assert tcp(topo.outside, "10.96.0.2", 80) == "10.98.0.2"
    finally:
        nft.teardown(topo.host, TABLE)
