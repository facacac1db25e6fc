"""The topology graph of a real engine (containers, bridges, veths in a test-made host
namespace): what the kernel has is what the graph shows; rates come from real
traffic; "can A reach B?" gives the doctor's verdict on a path."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = pytest.mark.root


def _by_kind(g: dict, kind: str, part: str = "nodes") -> list[dict]:
    return [x for x in g[part] if x["kind"] == kind]


def _ctr(g: dict, name: str) -> dict | None:
    return next((n for n in _by_kind(g, "container") if n["name"] == name), None)


@pytest.fixture
def wired(net_env):
    b = net_env.berth
    b("network", "create", "--subnet", "10.93.0.0/24", "front", check=True)
    b("network", "create", "--subnet", "10.94.0.0/24", "back", check=True)
    for name, net in (("a", "front"), ("b", "front"), ("x", "back")):
        b("run", "-d", "--name", name, "--network", net, "busybox", "sleep", "300", check=True)
    return net_env


def test_graph_of_real_containers_matches_the_kernel(wired):
    b = wired.berth
    b("run", "-d", "--name", "web", "--network", "front", "-p", "127.0.0.1:18080:80",
      "busybox", "httpd", "-f", "-p", "80", check=True)  # fmt: skip
    b("run", "-d", "--name", "side", "--network", "container:a", "busybox", "sleep", "300", check=True)  # fmt: skip
    eng = wired.engine()
    g = eng.topology()
    front = next(n for n in _by_kind(g, "network") if n["name"] == "front")
    assert front["state"] == "up" and front["bridge"]
    a = _ctr(g, "a")
    assert a["addresses"][0]["ip"].startswith("10.93.0.")
    (veth,) = [e for e in g["edges"] if e["kind"] == "veth" and e["source"] == a["id"]]
    assert veth["target"] == front["id"] and veth["state"] == "up"
    # The host end named in the graph is a real link on the front bridge, in the host netns.
    out = subprocess.run(["ip", "-n", wired.host_netns, "-o", "link", "show", veth["host_ifname"]],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"master {front['bridge']}" in out
    # Published port: 127.0.0.1:18080 -> web:80.
    (pub,) = _by_kind(g, "publish", "edges")
    assert pub["target"] == _ctr(g, "web")["id"]
    assert pub["label"].startswith("127.0.0.1:18080 → 10.93.0.") and pub["label"].endswith(
        ":80/tcp"
    )
    # side lives in a's network namespace.
    (sh,) = _by_kind(g, "shares", "edges")
    assert (sh["source"], sh["target"]) == (_ctr(g, "side")["id"], a["id"])
    # hn is on the host's network (the engine's host netns): no veth, the host network.
    b("run", "-d", "--name", "hn", "--network", "host", "busybox", "sleep", "300", check=True)
    g = eng.topology()
    (hn,) = [e for e in g["edges"] if e["source"] == _ctr(g, "hn")["id"]]
    hostnet = next(n for n in g["nodes"] if n["id"] == hn["target"])
    assert hn["kind"] == "hostnet" and hostnet["driver"] == "host"
    assert eng.container_host_ends("hn") == {}  # its links are the host's own
    # Stopping b (from the CLI) takes its node and veth away.
    b("stop", "-t", "1", "b", check=True)
    g2 = eng.topology()
    assert _ctr(g2, "b") is None and _ctr(g, "b") is not None
    assert not [e for e in g2["edges"] if e["source"] == _ctr(g, "b")["id"]]


def test_a_veth_end_taken_off_its_bridge_is_flagged(wired):
    eng = wired.engine()
    g = eng.topology()
    (veth,) = [e for e in g["edges"] if e["kind"] == "veth" and e["source"] == _ctr(g, "b")["id"]]
    subprocess.run(["ip", "-n", wired.host_netns, "link", "set", veth["host_ifname"], "nomaster"],
                   check=True)  # fmt: skip
    g = eng.topology()
    e = next(x for x in g["edges"] if x["id"] == veth["id"])
    assert e["state"] == "detached" and "on no bridge" in e["problem"]
    # The container's own view of its links agrees: eth0's peer, on no bridge now.
    ends = eng.container_host_ends("b")
    assert ends["eth0"]["HostIfname"] == veth["host_ifname"] and ends["eth0"]["Bridge"] == ""
    assert eng.container_host_ends("a")["eth0"]["Bridge"] == veth["bridge"]


def test_rates_follow_real_traffic(wired):
    eng = wired.engine()
    g = eng.topology()
    b_ip = _ctr(g, "b")["addresses"][0]["ip"]
    a_id = _ctr(g, "a")["id"]
    (veth,) = [e["id"] for e in g["edges"] if e["kind"] == "veth" and e["source"] == a_id]
    prev = eng.topology_counters()
    time.sleep(0.2)
    wired.berth("exec", "a", "ping", "-c", "3", "-i", "0.2", "-s", "1000", b_ip, check=True)
    got = eng.topology_rates(prev=prev)
    r = got["rates"][veth]
    assert r["out"] > 0 and r["in"] > 0  # a sent the requests, got the replies
    assert got["counters"]["edges"][veth][0] >= prev["edges"][veth][0] + 3000


def test_reach_same_network_and_isolation_between_networks(wired):
    eng = wired.engine()
    r = eng.topology_reach("a", "b")
    assert r["ok"] is True, r
    g = eng.topology()
    assert r["path"][0] == _ctr(g, "a")["id"] and r["path"][-1] == _ctr(g, "b")["id"]
    assert any(p.startswith("net:") for p in r["path"])
    r = eng.topology_reach("a", "x")
    assert r["ok"] is False and r["check"] == "isolation"
    assert "isolation" in r["reason"] and "front" in r["reason"] and "back" in r["reason"]
    back = next(n for n in _by_kind(g, "network") if n["name"] == "back")
    assert r["break_at"] == f"uplink:{back['network_id']}" and r["break_at"] in r["path"]
    assert "host" in r["path"]


def test_reach_a_published_port_from_another_network_and_the_loopback_one(wired):
    b = wired.berth
    b("run", "-d", "--name", "web", "--network", "front", "-p", "18081:80",
      "-p", "127.0.0.1:18082:81", "busybox", "httpd", "-f", "-p", "80", check=True)  # fmt: skip
    eng = wired.engine()
    g = eng.topology()
    web = _ctr(g, "web")["id"]
    # x is on back: a host port is not behind the isolation between networks.
    r = eng.topology_reach("x", "port:tcp:0.0.0.0:18081")
    assert r["ok"] is True, r
    assert r["probed"] == "10.94.0.1:18081"  # back's gateway: the host as x sees it
    # Through the host, its port, and on (DNAT) to the container behind it.
    assert r["path"][-5:] == ["host", "listen:tcp:0.0.0.0:18081", "port:tcp:0.0.0.0:18081",
                              "publish:tcp:0.0.0.0:18081", web]  # fmt: skip
    r = eng.topology_reach("x", "port:tcp:127.0.0.1:18082")
    assert r["ok"] is False and r["check"] == "loopback" and "loopback only" in r["reason"]
    # A port nothing listens on, on a container of the same network.
    r = eng.topology_reach("a", "web:81")
    assert r["ok"] is False and r["check"] == "listening" and r["break_at"] == web


def test_macvlan_container_hangs_off_its_parent_interface(net_env):
    # The "LAN" card: one end of a veth pair (this kernel has no dummy devices).
    subprocess.run(["ip", "-n", net_env.host_netns, "link", "add", "lan0", "type", "veth",
                    "peer", "name", "lan0p"], check=True)  # fmt: skip
    subprocess.run(["ip", "-n", net_env.host_netns, "link", "set", "lan0", "up"], check=True)
    b = net_env.berth
    b("network", "create", "-d", "macvlan", "-o", "parent=lan0", "--subnet", "192.168.77.0/24",
      "lan", check=True)  # fmt: skip
    b("run", "-d", "--name", "m", "--network", "lan", "busybox", "sleep", "300", check=True)
    eng = net_env.engine()
    g = eng.topology()
    m = _ctr(g, "m")
    (sub,) = [e for e in g["edges"] if e["source"] == m["id"]]
    lan = next(n for n in g["nodes"] if n["id"] == sub["target"])
    assert sub["kind"] == "sublink" and sub["ip"].startswith("192.168.77.")
    assert lan["driver"] == "macvlan" and lan["parent"] == "lan0" and lan["state"] == "up"
    (parent,) = [e for e in g["edges"] if e["kind"] == "parent"]
    assert (parent["source"], parent["target"]) == (lan["id"], "if:lan0")
    # The kernel links eth0 to lan0 as its parent.
    end = eng.container_host_ends("m")["eth0"]
    assert end["Kind"] == "macvlan" and end["HostIfname"] == "lan0" and end["Bridge"] == ""
