"""engine.network.ports against the real kernel: reservations in a network
namespace the test made (the engine's "host"), the port keeper, and DNAT from
the host's own addresses and 127.0.0.1 into a "container" namespace.

Every test works in namespaces named after its engine's prefix and removes
them, the keeper and the test's processes in ``finally``. Traffic flows only
between those namespaces, on addresses the test assigned (10.231/10.232.0.0/24).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import helpers
from engine.errors import Conflict, InvalidArgument
from engine.netns import netns_path, run_in_netns
from engine.network import nft, ports, sysctl
from engine.network.ports import parse_publish

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

REPO = Path(__file__).resolve().parents[2]


def _run(*cmd: str) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {p.returncode}: {p.stderr}")
    return p.stdout


def _keeper_pids(root: Path) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"engine.network.ports" in argv and str(root).encode() in argv:
            found.append(int(pid))
    return found


@pytest.fixture
def env(eng_env):
    """An engine whose "host" is a network namespace made here; the keeper it
    starts and the namespaces are gone afterwards."""
    eng_env.host_netns = f"{eng_env.prefix}h"
    _run("ip", "netns", "add", eng_env.host_netns)
    try:
        _run("ip", "-n", eng_env.host_netns, "link", "set", "lo", "up")
        yield eng_env
    finally:
        eng = eng_env.engine()
        helpers.stop_all(eng)
        for ns in (eng_env.host_netns, f"{eng_env.prefix}c"):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        left = _keeper_pids(eng_env.root)
        for pid in left:
            os.kill(pid, 9)
        assert not left, f"port keeper left running: {left}"


def _add_container_row(eng, cid: str, name: str) -> None:
    """A minimal containers row: the keeper keeps ports only of containers that exist."""
    with eng.db.write() as c:
        c.execute(
            "INSERT INTO containers(id, name, image_id, image_ref, created, state, config)"
            " VALUES (?, ?, 'sha256:0', 'test', ?, 'running', '{}')",
            (cid, name, time.time()),
        )


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _listening(netns: str) -> set[tuple[str, int]]:
    """(proto, port) of the sockets bound inside the namespace, from its /proc/net."""

    def read() -> set[tuple[str, int]]:
        out = set()
        for proto in ("tcp", "udp"):
            for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
                out.add((proto, int(line.split()[1].rsplit(":", 1)[1], 16)))
        return out

    return run_in_netns(netns_path(netns), read)


def test_reserve_in_netns_conflict_names_holder_and_release(env):
    eng, ns = env.engine(), env.host_netns
    cid = "a" * 64
    _add_container_row(eng, cid, "web")
    got = ports.reserve(parse_publish("18080:80"), ns)
    try:
        assert [(r.proto, r.host_ip, r.host_port, r.container_port) for r in got] == [
            ("tcp", "0.0.0.0", 18080, 80)
        ]
        assert ("tcp", 18080) in _listening(ns)
        # Held by this process: the message names us.
        with pytest.raises(Conflict) as e:
            ports.reserve(parse_publish("127.0.0.1:18080:80"), ns)
        assert str(e.value) == (
            f"port 127.0.0.1:18080/tcp is already in use by pid {os.getpid()} "
            f"({_comm(os.getpid())})"
        )
        # Handed to the keeper: still reserved, now named as the keeper and its container.
        ports.hold(eng, cid, got)
        assert got[0].sock is None
        assert ports.held(eng) == {cid: ["0.0.0.0:18080/tcp"]}
        keeper = helpers.running(eng, ports.KEEPER)
        assert keeper is not None and _comm(keeper.pid) == "berth-ports"
        with pytest.raises(Conflict) as e:
            ports.reserve(parse_publish("18080:80"), ns, eng)
        assert str(e.value) == (
            f"port 18080/tcp is already in use by pid {keeper.pid} (berth-ports), "
            "published by container web"
        )
        # Release frees it (and is idempotent).
        assert ports.release(eng, cid) == ["0.0.0.0:18080/tcp"]
        assert ports.release(eng, cid) == []
        assert ports.held(eng) == {}
        again = ports.reserve(parse_publish("18080:80"), ns)
        ports.close_all(again)
    finally:
        ports.close_all(got)


def test_all_or_nothing(env):
    ns = env.host_netns
    blocker = ports.reserve(parse_publish("9001:1"), ns)
    try:
        with pytest.raises(Conflict, match=r"port 9001/tcp is already in use by pid \d+"):
            ports.reserve(parse_publish("9000-9002:80-82"), ns)
        # 9000 was bound before 9001 failed: it was let go again.
        listening = _listening(ns)
        assert ("tcp", 9000) not in listening and ("tcp", 9002) not in listening
        ok = ports.reserve(parse_publish("9000:80") + parse_publish("9002:82"), ns)
        assert [r.host_port for r in ok] == [9000, 9002]
        ports.close_all(ok)
        # UDP conflicts too.
        udp = ports.reserve(parse_publish("5353:53/udp"), ns)
        with pytest.raises(Conflict, match="port 127.0.0.1:5353/udp is already in use by pid"):
            ports.reserve(parse_publish("127.0.0.1:5353:53/udp"), ns)
        ports.close_all(udp)
    finally:
        ports.close_all(blocker)


def test_random_ports_and_host_range(env):
    ns = env.host_netns
    got = ports.reserve(parse_publish("127.0.0.1::80") + parse_publish("53/udp"), ns)
    try:
        tcp, udp = got
        assert tcp.host_ip == "127.0.0.1" and tcp.host_port > 0
        assert tcp.sock is not None and tcp.sock.getsockname() == ("127.0.0.1", tcp.host_port)
        assert udp.proto == "udp" and udp.host_ip == "0.0.0.0" and udp.host_port > 0
        assert {("tcp", tcp.host_port), ("udp", udp.host_port)} <= _listening(ns)
        assert ports.format_ports(got) == (
            f"0.0.0.0:{udp.host_port}->53/udp, 127.0.0.1:{tcp.host_port}->80/tcp"
        )
    finally:
        ports.close_all(got)
    # A host range takes its first free port; none free -> Conflict.
    first = ports.reserve(parse_publish("8000:1"), ns)
    try:
        second = ports.reserve(parse_publish("8000-8001:80"), ns)
        assert second[0].host_port == 8001
        with pytest.raises(Conflict, match="no free host port in 8000-8001/tcp"):
            ports.reserve(parse_publish("8000-8001:80"), ns)
        ports.close_all(second)
    finally:
        ports.close_all(first)


def test_address_not_on_the_host(env):
    with pytest.raises(InvalidArgument, match="10.254.254.1 is not an address of the host"):
        ports.reserve(parse_publish("10.254.254.1:8080:80"), env.host_netns)


HOLDER = """
import json, sys
from engine.api import Engine
from engine.network import ports
eng = Engine(actor="test")
got = ports.reserve(ports.parse_publish(sys.argv[2]), eng.config.host_netns)
ports.hold(eng, sys.argv[1], got)
print(json.dumps([r.to_dict() for r in got]))
"""


def test_keeper_outlives_the_caller_and_drops_removed_containers(env, monkeypatch):
    eng, ns = env.engine(), env.host_netns
    cid = "b" * 64
    _add_container_row(eng, cid, "db")
    p = subprocess.run(
        [sys.executable, "-c", HOLDER, cid, "15432:5432"],
        env=env.env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]["host_port"] == 15432
    # The caller is gone; the port is still reserved, by the keeper.
    assert ports.held(eng) == {cid: ["0.0.0.0:15432/tcp"]}
    with pytest.raises(
        Conflict, match=r"in use by pid \d+ \(berth-ports\), published by container db"
    ):
        ports.reserve(parse_publish("15432:5432"), ns, eng)
    # The container's row goes without a release: the keeper notices and lets go.
    with eng.db.write() as c:
        c.execute("DELETE FROM containers WHERE id=?", (cid,))
    assert _wait(lambda: ports.held(eng) == {}, timeout=ports.RECONCILE * 4)
    ports.close_all(ports.reserve(parse_publish("15432:5432"), ns))


def test_idle_keeper_retires_and_comes_back(env, monkeypatch):
    monkeypatch.setenv(ports.IDLE_EXIT_ENV, "0.5")
    eng, ns = env.engine(), env.host_netns
    cid = "c" * 64
    _add_container_row(eng, cid, "app")
    got = ports.reserve(parse_publish("127.0.0.1:17000:80"), ns)
    ports.hold(eng, cid, got)
    first = helpers.running(eng, ports.KEEPER)
    assert first is not None
    ports.release(eng, cid)
    assert _wait(lambda: helpers.running(eng, ports.KEEPER) is None, timeout=10)
    assert ports.held(eng) == {}  # no keeper: nothing held, none started
    assert helpers.running(eng, ports.KEEPER) is None
    # The next hold starts a new one (the socket file of the old one is gone or replaced).
    got = ports.reserve(parse_publish("127.0.0.1:17000:80"), ns)
    ports.hold(eng, cid, got)
    second = helpers.running(eng, ports.KEEPER)
    assert second is not None and second.pid != first.pid
    assert ports.held(eng) == {cid: ["127.0.0.1:17000/tcp"]}


# -- end to end: DNAT into a "container" namespace ----------------------------------------

SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(16)
print("ready", flush=True)
while True:
    c, a = s.accept()
    c.sendall(("hello " + a[0]).encode())
    c.close()
"""


def _fetch(addr: str, port: int) -> str:
    with socket.create_connection((addr, port), timeout=3) as s:
        return s.recv(100).decode()


def test_published_port_answers_on_localhost_and_host_address(env):
    eng, ns = env.engine(), env.host_netns
    cns, br, veth = f"{env.prefix}c", f"{env.prefix}br", f"{env.prefix}v"
    server = None
    got: list[ports.Reserved] = []
    try:
        _run("ip", "netns", "add", cns)
        _run("ip", "-n", cns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "add", br, "type", "bridge")
        _run("ip", "-n", ns, "addr", "add", "10.231.0.1/24", "dev", br)
        _run("ip", "-n", ns, "link", "set", br, "up")
        # An "uplink" carrying the host's own address (a veth pair: this kernel
        # has no dummy module).
        up = f"{env.prefix}o"
        _run("ip", "-n", ns, "link", "add", up, "type", "veth", "peer", "name", f"{env.prefix}p")
        _run("ip", "-n", ns, "addr", "add", "10.232.0.1/24", "dev", up)
        _run("ip", "-n", ns, "link", "set", up, "up")
        _run(
            "ip",
            "-n",
            ns,
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            cns,
        )
        _run("ip", "-n", ns, "link", "set", veth, "master", br, "up")
        # Hairpin mode on the bridge port, as Docker sets it without its userland
        # proxy: with br_netfilter loaded, a container's packet to its own
        # published port is DNAT'd on the bridge path and must leave by the
        # port it came in on, which a bridge refuses otherwise.
        _run("ip", "-n", ns, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
        _run("ip", "-n", cns, "addr", "add", "10.231.0.2/24", "dev", "eth0")
        _run("ip", "-n", cns, "link", "set", "eth0", "up")
        _run("ip", "-n", cns, "route", "add", "default", "via", "10.231.0.1")
        server = subprocess.Popen(
            ["ip", "netns", "exec", cns, sys.executable, "-c", SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

        # What container start will do: reserve, hold, DNAT, route_localnet.
        cid = "d" * 64
        _add_container_row(eng, cid, "web")
        got = ports.reserve(parse_publish("80"), ns, eng)  # a random host port
        hp = got[0].host_port
        ports.hold(eng, cid, got)
        net = nft.NetSpec("testnet", br, "10.231.0.0/24")
        nft.sync(ns, env.prefix, [net], ports.port_specs(got, "10.231.0.2", br))
        sysctl.route_localnet(ns, br, True)
        sysctl.ensure_ip_forward(ns)

        # From the host itself: loopback (masqueraded to the bridge address) and
        # one of its own addresses (source kept), though our reserving socket
        # listens on 0.0.0.0:hp there.
        host = netns_path(ns)
        assert run_in_netns(host, functools.partial(_fetch, "127.0.0.1", hp)) == "hello 10.231.0.1"
        assert run_in_netns(host, functools.partial(_fetch, "10.232.0.1", hp)) == "hello 10.232.0.1"
        # Hairpin: the container reaches its own published port via the host address.
        got_back = run_in_netns(netns_path(cns), functools.partial(_fetch, "10.232.0.1", hp))
        assert got_back == "hello 10.231.0.1"
        # Still reserved while published.
        with pytest.raises(Conflict, match="berth-ports"):
            ports.reserve(parse_publish(f"{hp}:80"), ns)
    finally:
        ports.close_all(got)
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        try:
            nft.teardown(ns, env.prefix)
        except Exception:
            pass
