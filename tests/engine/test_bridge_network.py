"""Bridge networks end to end: real bridges, veths, nftables and containers, all
inside a network namespace the test made as the engine's "host"."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.root


def _ip(env, *args: str) -> str:
    return subprocess.run(
        ["ip", "-n", env.host_netns, *args], capture_output=True, text=True
    ).stdout


def _ipaddr(b, name: str) -> str:
    return b(
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        name,
        check=True,
    ).stdout.split()[0]


def test_containers_on_a_user_network_reach_each_other(net_env):
    b = net_env.berth
    b("network", "create", "--subnet", "10.77.0.0/24", "app", check=True)
    b("run", "-d", "--name", "a", "--network", "app", "busybox", "sleep", "300", check=True)
    b(
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "app",
        "--ip",
        "10.77.0.50",
        "busybox",
        "sleep",
        "300",
        check=True,
    )
    ip_a, ip_b = _ipaddr(b, "a"), _ipaddr(b, "b")
    assert ip_a.startswith("10.77.0.") and ip_b == "10.77.0.50"
    # What the kernel says inside the container, not our records.
    addr = b("exec", "a", "ip", "-o", "-4", "addr", "show", "eth0", check=True).stdout
    assert f"{ip_a}/24" in addr
    assert "default via 10.77.0.1" in b("exec", "a", "ip", "route", check=True).stdout
    assert b("exec", "a", "ping", "-c1", "-W2", ip_b).returncode == 0
    # The host end of each veth sits on the network's bridge in the engine's host netns.
    net = json.loads(b("network", "inspect", "app", check=True).stdout)[0]
    bridge = net["Options"].get("com.docker.network.bridge.name") or ""
    links = _ip(net_env, "-o", "link", "show")
    veths = [ln for ln in links.splitlines() if "master" in ln and f"{net_env.prefix}v" in ln]
    assert len(veths) == 2
    assert {c["Name"] for c in net["Containers"].values()} == {"a", "b"}
    assert bridge == "" or bridge in links
    hosts = b("exec", "a", "cat", "/etc/hosts", check=True).stdout
    assert ip_a in hosts
    b("rm", "-f", "a", "b", check=True)
    assert f"{net_env.prefix}v" not in _ip(net_env, "-o", "link", "show")
    b("network", "rm", "app", check=True)
    # Every host change is in the events log, with its actor.
    ev = b(
        "events", "--filter", "type=network", "--format", "{{.Action}} {{.actor}}", check=True
    ).stdout
    for action in ("create", "host_changes", "endpoint_up", "endpoint_down", "destroy"):
        assert any(ln.startswith(action + " uid:0") for ln in ev.splitlines()), (action, ev)


def test_networks_are_isolated_and_internal_has_no_way_out(net_env):
    b = net_env.berth
    b("network", "create", "--subnet", "10.78.1.0/24", "n1", check=True)
    b("network", "create", "--subnet", "10.78.2.0/24", "n2", check=True)
    b("network", "create", "--internal", "--subnet", "10.78.3.0/24", "inner", check=True)
    b("run", "-d", "--name", "x1", "--network", "n1", "busybox", "sleep", "300", check=True)
    b("run", "-d", "--name", "y1", "--network", "n1", "busybox", "sleep", "300", check=True)
    b("run", "-d", "--name", "x2", "--network", "n2", "busybox", "sleep", "300", check=True)
    b("run", "-d", "--name", "i1", "--network", "inner", "busybox", "sleep", "300", check=True)
    assert b("exec", "x1", "ping", "-c1", "-W2", _ipaddr(b, "y1")).returncode == 0
    assert b("exec", "x1", "ping", "-c1", "-W2", _ipaddr(b, "x2")).returncode != 0
    assert "default" not in b("exec", "i1", "ip", "route", check=True).stdout
    assert b("exec", "i1", "ping", "-c1", "-W2", _ipaddr(b, "x1")).returncode != 0
    rules = subprocess.run(["ip", "netns", "exec", net_env.host_netns, "nft", "list", "table", "inet", net_env.prefix],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "masquerade" in rules and "10.78.1.0/24" in rules
    b("rm", "-f", "x1", "y1", "x2", "i1", check=True)
    b("network", "rm", "n1", "n2", "inner", check=True)


def test_outbound_nat_reaches_an_outside_namespace(net_env):
    """The container talks to a namespace outside the engine's host; it sees the host's address."""
    out_ns = f"{net_env.prefix}o"
    sh = lambda *a: subprocess.run(list(a), check=True, capture_output=True)  # noqa: E731
    sh("ip", "netns", "add", out_ns)
    try:
        sh(
            "ip",
            "-n",
            net_env.host_netns,
            "link",
            "add",
            "upl0",
            "type",
            "veth",
            "peer",
            "name",
            "wan0",
            "netns",
            out_ns,
        )
        sh("ip", "-n", net_env.host_netns, "addr", "add", "10.98.0.1/24", "dev", "upl0")
        sh("ip", "-n", net_env.host_netns, "link", "set", "upl0", "up")
        sh("ip", "-n", out_ns, "addr", "add", "10.98.0.2/24", "dev", "wan0")
        sh("ip", "-n", out_ns, "link", "set", "wan0", "up")
        sh("ip", "-n", out_ns, "link", "set", "lo", "up")
        b = net_env.berth
        b("network", "create", "--subnet", "10.79.0.0/24", "egress", check=True)
        server = subprocess.Popen(["ip", "netns", "exec", out_ns, "/bin/busybox", "nc", "-l", "-p", "9000"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            p = b("run", "--rm", "--network", "egress", "busybox", "sh", "-c",
                  "sleep 0.5; echo hello-outside | nc -w 2 10.98.0.2 9000")  # fmt: skip
            assert p.returncode == 0, p.stderr
            out, _ = server.communicate(timeout=20)
            assert b"hello-outside" in out
        finally:
            if server.poll() is None:
                server.kill()
        fwd = subprocess.run(["ip", "netns", "exec", net_env.host_netns, "cat", "/proc/sys/net/ipv4/ip_forward"],
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
        assert fwd == "1"
        b("network", "rm", "egress", check=True)
    finally:
        subprocess.run(["ip", "netns", "del", out_ns], check=False)


def test_addresses_are_distinct_under_concurrency_and_released(net_env):
    b = net_env.berth
    b("network", "create", "--subnet", "10.80.0.0/24", "busy", check=True)
    with ThreadPoolExecutor(10) as ex:
        res = list(
            ex.map(
                lambda i: b("run", "-d", "--network", "busy", "busybox", "sleep", "300"), range(30)
            )
        )
    assert all(r.returncode == 0 for r in res), [r.stderr for r in res if r.returncode]
    ips = [_ipaddr(b, r.stdout.strip()) for r in res]
    assert len(set(ips)) == 30 and all(ip.startswith("10.80.0.") for ip in ips)
    p = b("network", "rm", "busy")
    assert p.returncode != 0 and "active endpoints" in p.stderr
    b("rm", "-f", *[r.stdout.strip() for r in res], check=True)
    net = json.loads(b("network", "inspect", "busy", check=True).stdout)[0]
    assert net["Containers"] == {}
    b("network", "rm", "busy", check=True)
    assert "10.80.0." not in _ip(net_env, "-o", "addr")


def test_bad_network_inputs_leave_nothing(net_env):
    b = net_env.berth
    p = b("run", "--rm", "--network", "nosuchnet", "busybox", "true")
    assert p.returncode == 125 and "nosuchnet" in p.stderr
    b("network", "create", "--subnet", "10.81.0.0/24", "tight", check=True)
    p = b("run", "--network", "tight", "--ip", "10.99.9.9", "busybox", "true")
    assert p.returncode == 125 and "10.99.9.9" in p.stderr
    p = b("network", "create", "--subnet", "10.81.0.0/25", "overlapping")
    assert p.returncode == 125 and "tight" in p.stderr
    assert b("ps", "-aq").stdout.strip() == ""
    assert "overlapping" not in b("network", "ls").stdout
    b("network", "rm", "tight", check=True)


def test_default_bridge_network(net_env):
    b = net_env.berth
    b("run", "-d", "--name", "d1", "--network", "bridge", "busybox", "sleep", "300", check=True)
    ip = _ipaddr(b, "d1")
    assert ip.startswith("172.17.")
    assert f"{net_env.prefix}0" in _ip(net_env, "-o", "link", "show")
    assert "bridge" in b("network", "ls", "--format", "{{.Name}}").stdout.split()
    b("rm", "-f", "d1", check=True)


@pytest.mark.parametrize("driver", ["macvlan", "ipvlan"])
def test_macvlan_and_ipvlan_networks_on_a_parent_interface(net_env, driver):
    """The parent is one end of a veth pair in the test's host netns (this kernel has no dummy module)."""
    ns = net_env.host_netns
    for cmd in (["link", "add", "par0", "type", "veth", "peer", "name", "par1"],
                ["link", "set", "par0", "up"], ["link", "set", "par1", "up"]):  # fmt: skip
        subprocess.run(["ip", "-n", ns, *cmd], check=True)
    probe = subprocess.run(["ip", "-n", ns, "link", "add", "probe0", "link", "par0", "type", driver],
                           capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        p = net_env.berth(
            "network", "create", "-d", driver, "--subnet", "10.87.0.0/24", "-o", "parent=par0", "x"
        )
        assert p.returncode == 0, p.stderr
        r = net_env.berth("run", "--rm", "--network", "x", "busybox", "true")
        assert r.returncode == 125 and f"no {driver} support" in r.stderr
        net_env.berth("network", "rm", "x", check=True)
        pytest.skip(f"this kernel has no {driver} support")
    subprocess.run(["ip", "-n", ns, "link", "del", "probe0"], check=False)
    b = net_env.berth
    b(
        "network",
        "create",
        "-d",
        driver,
        "--subnet",
        "10.85.0.0/24",
        "-o",
        "parent=par0",
        "lan",
        check=True,
    )
    b("run", "-d", "--name", "m1", "--network", "lan", "busybox", "sleep", "300", check=True)
    b("run", "-d", "--name", "m2", "--network", "lan", "busybox", "sleep", "300", check=True)
    cid = b("inspect", "-f", "{{.Id}}", "m1", check=True).stdout.strip()
    link = subprocess.run(["ip", "-n", f"{net_env.prefix}-{cid[:12]}", "-d", "link", "show", "eth0"],
                          capture_output=True, text=True).stdout  # fmt: skip
    assert driver in link
    assert b("exec", "m1", "ping", "-c1", "-W2", _ipaddr(b, "m2")).returncode == 0
    b("rm", "-f", "m1", "m2", check=True)
    b("network", "rm", "lan", check=True)
    p = b(
        "network", "create", "-d", driver, "--subnet", "10.86.0.0/24", "-o", "parent=nosuch9", "bad"
    )
    assert p.returncode == 125 and "nosuch9" in p.stderr


def test_published_ports_answer_on_the_host_and_conflicts_are_refused(net_env):
    b = net_env.berth
    b("network", "create", "--subnet", "10.88.0.0/24", "web", check=True)
    b("run", "-d", "--name", "srv", "--network", "web", "-p", "127.0.0.1:18080:80", "-p", "18081:81",
      "busybox", "sh", "-c", "echo hello-80 > /tmp/i; httpd -p 80 -h /tmp; nc -lk -p 81 -e echo hi81; sleep 300",
      check=True)  # fmt: skip
    ports = b("ps", "--format", "{{.Ports}}").stdout
    assert "127.0.0.1:18080->80/tcp" in ports and "0.0.0.0:18081->81/tcp" in ports
    assert b("port", "srv", "80").stdout.strip() == "127.0.0.1:18080"
    info = json.loads(b("inspect", "srv", check=True).stdout)[0]
    assert info["NetworkSettings"]["Ports"]["80/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": "18080"}
    ]
    # From the engine's host: loopback (DNAT + route_localnet) and the hairpin from another container.
    get = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    fetch = subprocess.run(["ip", "netns", "exec", net_env.host_netns, sys.executable, "-c", get,
                            "http://127.0.0.1:18080/i"], capture_output=True, text=True)  # fmt: skip
    assert fetch.stdout.strip() == "hello-80", fetch.stderr
    # The host port is held for the container's life: a second container cannot take it.
    p = b(
        "run",
        "-d",
        "--name",
        "dup",
        "--network",
        "web",
        "-p",
        "127.0.0.1:18080:80",
        "busybox",
        "sleep",
        "300",
    )
    assert p.returncode == 125 and "18080" in p.stderr and "in use" in p.stderr
    assert b("inspect", "-f", "{{.State.Status}}", "dup").stdout.strip() in ("created", "")
    rules = subprocess.run(["ip", "netns", "exec", net_env.host_netns, "nft", "list", "table", "inet", net_env.prefix],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "18080" in rules
    b("rm", "-f", "srv", "dup", check=True)
    rules = subprocess.run(["ip", "netns", "exec", net_env.host_netns, "nft", "list", "table", "inet", net_env.prefix],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "18080" not in rules
    # ...and after rm the port is free again.
    b("run", "-d", "--name", "again", "--network", "web", "-p", "127.0.0.1:18080:80", "busybox", "sleep", "300",
      check=True)  # fmt: skip
    b("rm", "-f", "again", check=True)
    b("network", "rm", "web", check=True)
    p = b("run", "--rm", "-p", "80:80:80", "busybox", "true")
    assert p.returncode == 125 and "80:80:80" in p.stderr


def test_names_resolve_on_user_networks_but_not_on_the_default_bridge(net_env):
    b = net_env.berth
    b("network", "create", "--subnet", "10.89.0.0/24", "named", check=True)
    b("run", "-d", "--name", "web", "--network", "named", "--network-alias", "www", "busybox", "sleep", "300",
      check=True)  # fmt: skip
    b("run", "-d", "--name", "client", "--network", "named", "busybox", "sleep", "300", check=True)
    assert (
        "nameserver 10.89.0.1" in b("exec", "client", "cat", "/etc/resolv.conf", check=True).stdout
    )
    web_ip = _ipaddr(b, "web")
    deadline = __import__("time").monotonic() + 20
    while True:
        p = b("exec", "client", "ping", "-c1", "-W2", "web")
        if p.returncode == 0 or __import__("time").monotonic() > deadline:
            break
    assert p.returncode == 0 and web_ip in p.stdout, p.stdout + p.stderr
    assert b("exec", "client", "ping", "-c1", "-W2", "www").returncode == 0
    b("run", "-d", "--name", "d1", "--network", "bridge", "busybox", "sleep", "300", check=True)
    b("run", "-d", "--name", "d2", "--network", "bridge", "busybox", "sleep", "300", check=True)
    assert b("exec", "d1", "ping", "-c1", "-W1", "d2").returncode != 0
    b("rm", "-f", "web", "client", "d1", "d2", check=True)
    b("network", "rm", "named", check=True)


def test_containers_without_network_flag_join_the_default_bridge(net_env):
    b = net_env.berth
    b("run", "-d", "--name", "plain", "busybox", "sleep", "300", check=True)
    assert b("inspect", "-f", "{{.HostConfig.NetworkMode}}", "plain").stdout.strip() == "bridge"
    assert _ipaddr(b, "plain").startswith("172.17.")
    b("rm", "-f", "plain", check=True)


def test_connect_and_disconnect_a_running_container(net_env):
    b = net_env.berth
    b("network", "create", "--subnet", "10.90.1.0/24", "front", check=True)
    b("network", "create", "--subnet", "10.90.2.0/24", "back", check=True)
    b("run", "-d", "--name", "app", "--network", "front", "busybox", "sleep", "300", check=True)
    b("run", "-d", "--name", "db", "--network", "back", "busybox", "sleep", "300", check=True)
    db_ip = _ipaddr(b, "db")
    assert b("exec", "app", "ping", "-c1", "-W1", db_ip).returncode != 0
    b("network", "connect", "--ip", "10.90.2.77", "back", "app", check=True)
    assert (
        "10.90.2.77/24"
        in b("exec", "app", "ip", "-o", "-4", "addr", "show", "eth1", check=True).stdout
    )
    assert b("exec", "app", "ping", "-c1", "-W2", db_ip).returncode == 0
    nets = b(
        "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", "app"
    ).stdout.split()
    assert sorted(nets) == ["back", "front"]
    b("network", "disconnect", "back", "app", check=True)
    assert "eth1" not in b("exec", "app", "ip", "-o", "link", check=True).stdout
    assert b("exec", "app", "ping", "-c1", "-W1", db_ip).returncode != 0
    b("rm", "-f", "app", "db", check=True)
    b("network", "rm", "front", "back", check=True)


def test_system_check_finds_and_removes_network_leftovers(net_env):
    b = net_env.berth
    ns, pfx = net_env.host_netns, net_env.prefix
    b("network", "create", "--subnet", "10.91.0.0/24", "kept", check=True)
    b("run", "-d", "--name", "live", "--network", "kept", "busybox", "sleep", "300", check=True)
    # Leftovers a crash could leave: a veth nobody owns, a bridge no network owns, a lost rule.
    subprocess.run(
        ["ip", "-n", ns, "link", "add", f"{pfx}vdead0", "type", "veth", "peer", "name", "strayp"],
        check=True,
    )
    subprocess.run(["ip", "-n", ns, "link", "add", f"{pfx}-stray", "type", "bridge"], check=True)
    listing = subprocess.run(["ip", "netns", "exec", ns, "nft", "-a", "list", "chain", "inet", pfx, "postrouting"],
                             capture_output=True, text=True).stdout  # fmt: skip
    handle = next(
        ln.split("# handle ")[1]
        for ln in listing.splitlines()
        if "10.91.0.0/24" in ln and "masq" in ln
    )
    subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "rule", "inet", pfx, "postrouting", "handle", handle],
                   check=True)  # fmt: skip
    found = json.loads(b("system", "check", "--json").stdout)
    objs = {f["obj"] for f in found if f["id"].startswith("network-")}
    assert {f"{pfx}vdead0", f"{pfx}-stray", f"inet {pfx}"} <= objs
    b("system", "check", "--fix", "--json")
    again = json.loads(b("system", "check", "--json").stdout)
    assert [f for f in again if f["id"].startswith("network-")] == []
    links = _ip(net_env, "-o", "link")
    assert f"{pfx}vdead0" not in links and f"{pfx}-stray" not in links
    # The live container's plumbing was left alone.
    assert b("exec", "live", "ping", "-c1", "-W2", "10.91.0.1").returncode == 0
    b("rm", "-f", "live", check=True)
    b("network", "rm", "kept", check=True)


def test_interfaces_berth_did_not_make_are_never_taken_over_or_deleted(net_env):
    b = net_env.berth
    ns = net_env.host_netns
    subprocess.run(["ip", "-n", ns, "link", "add", "hostbr", "type", "bridge"], check=True)
    subprocess.run(
        ["ip", "-n", ns, "link", "add", "vhost0", "type", "veth", "peer", "name", "vhost1"],
        check=True,
    )
    # A veth is not a bridge: refused, and nothing is left of the attempt.
    p = b(
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=vhost0",
        "--subnet",
        "10.92.1.0/24",
        "nope",
    )
    assert p.returncode == 125 and "vhost0" in p.stderr and "not a bridge" in p.stderr
    assert "10.92.1.1" not in _ip(net_env, "-o", "addr")
    assert "nope" not in b("network", "ls").stdout
    # A bad bridge name is refused before anything is made.
    p = b("network", "create", "-o", "com.docker.network.bridge.name=br+1", "bad")
    assert p.returncode == 125 and "br+1" not in _ip(net_env, "-o", "link")
    # An existing bridge is used, and left in place (without our address) by network rm.
    b(
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=hostbr",
        "--subnet",
        "10.92.2.0/24",
        "use",
        check=True,
    )
    assert "10.92.2.1/24" in _ip(net_env, "-o", "addr", "show", "dev", "hostbr")
    b("network", "rm", "use", check=True)
    assert "hostbr" in _ip(net_env, "-o", "link") and "10.92.2.1" not in _ip(net_env, "-o", "addr")
    # Publishing a port with a network mode that has no ports of its own is an error.
    p = b("run", "--rm", "--network", "none", "-p", "8080:80", "busybox", "true")
    assert p.returncode == 125 and "conflicting options" in p.stderr


def test_network_membership_is_kept_across_restarts(net_env):
    b = net_env.berth
    b("network", "create", "--subnet", "10.93.1.0/24", "main", check=True)
    b("network", "create", "--subnet", "10.93.2.0/24", "side", check=True)
    b("network", "create", "--internal", "--subnet", "10.93.3.0/24", "vault", check=True)
    # Connected before the first start: the --network network still gets eth0 and the route.
    b("create", "--name", "m", "--network", "main", "busybox", "sleep", "300", check=True)
    b("network", "connect", "vault", "m", check=True)
    b("start", "m", check=True)
    assert "10.93.1." in b("exec", "m", "ip", "-o", "-4", "addr", "show", "eth0", check=True).stdout
    assert "default via 10.93.1.1" in b("exec", "m", "ip", "route", check=True).stdout
    # A disconnect sticks across stop/start.
    b("network", "connect", "side", "m", check=True)
    b("network", "disconnect", "main", "m", check=True)
    b("stop", "-t", "1", "m", check=True)
    b("start", "m", check=True)
    nets = b(
        "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", "m"
    ).stdout.split()
    assert sorted(nets) == ["side", "vault"]
    assert "default via 10.93.2.1" in b("exec", "m", "ip", "route", check=True).stdout
    b("rm", "-f", "m", check=True)
    b("network", "rm", "main", "side", "vault", check=True)
    # A taken static address fails at create and leaves no container behind.
    b("network", "create", "--subnet", "10.93.4.0/24", "fixed", check=True)
    b(
        "create",
        "--name",
        "f1",
        "--network",
        "fixed",
        "--ip",
        "10.93.4.9",
        "busybox",
        "true",
        check=True,
    )
    p = b("create", "--name", "f2", "--network", "fixed", "--ip", "10.93.4.9", "busybox", "true")
    assert p.returncode == 125 and "10.93.4.9" in p.stderr
    assert b("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["f1"]
    b("rm", "f1", check=True)
    b("network", "rm", "fixed", check=True)


def test_names_resolve_across_all_of_a_containers_networks_and_for_shared_netns(net_env):
    import time

    b = net_env.berth
    b("network", "create", "--subnet", "10.94.1.0/24", "front", check=True)
    b("network", "create", "--subnet", "10.94.2.0/24", "back", check=True)
    b("run", "-d", "--name", "api", "--network", "front", "busybox", "sleep", "300", check=True)
    b("run", "-d", "--name", "db", "--network", "back", "busybox", "sleep", "300", check=True)
    b("network", "connect", "back", "api", check=True)
    # api asks its front gateway for a name only the back network knows.
    deadline = time.monotonic() + 20
    while True:
        p = b("exec", "api", "nslookup", "db", "10.94.1.1")
        if (p.returncode == 0 and _ipaddr(b, "db") in p.stdout) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert _ipaddr(b, "db") in p.stdout, p.stdout + p.stderr
    # A sidecar in api's network namespace sees api's names.
    b(
        "run",
        "-d",
        "--name",
        "side",
        "--network",
        "container:api",
        "busybox",
        "sleep",
        "300",
        check=True,
    )
    assert "nameserver 10.94.1.1" in b("exec", "side", "cat", "/etc/resolv.conf", check=True).stdout
    assert (
        b("exec", "side", "hostname", check=True).stdout
        == b("exec", "api", "hostname", check=True).stdout
    )
    b("rm", "-f", "side", "api", "db", check=True)
    b("network", "rm", "front", "back", check=True)


def test_network_rm_with_a_stopped_container(net_env):
    """Docker lets a network go while only stopped containers are on it; their next
    start names the missing network. A running one still pins it."""
    b = net_env.berth
    b("network", "create", "--subnet", "10.82.0.0/24", "gone", check=True)
    b("run", "-d", "--name", "up", "--network", "gone", "busybox", "sleep", "300", check=True)
    b("create", "--name", "idle", "--network", "gone", "busybox", "true", check=True)
    p = b("network", "rm", "gone")
    assert p.returncode != 0 and "active endpoints" in p.stderr
    b("stop", "-t", "0", "up", check=True)
    b("network", "rm", "gone", check=True)
    assert b("network", "ls", "-q", "--filter", "name=^gone$").stdout.strip() == ""
    for name in ("up", "idle"):
        p = b("start", name)
        assert p.returncode != 0 and "network gone not found" in p.stderr, p.stderr
        state = json.loads(b("inspect", name, check=True).stdout)[0]["State"]
        assert not state["Running"]
    # Its subnet is free again, and the containers can still be removed.
    b("network", "create", "--subnet", "10.82.0.0/24", "again", check=True)
    b("rm", "up", "idle", check=True)
    b("network", "rm", "again", check=True)


def test_macvlan_on_a_vlan_parent(net_env):
    """-o parent=par0.10 makes the 802.1q sub-interface (Docker does) and removes it with
    the network; on a kernel without VLAN support the error says so and nothing stays."""
    ns, b = net_env.host_netns, net_env.berth
    subprocess.run(["ip", "-n", ns, "link", "add", "par0", "type", "veth", "peer", "name", "par1"],
                   check=True)  # fmt: skip
    probe = subprocess.run(["ip", "-n", ns, "link", "add", "link", "par0", "name", "par0.9",
                            "type", "vlan", "id", "9"], capture_output=True)  # fmt: skip
    p = b("network", "create", "-d", "macvlan", "--subnet", "10.89.0.0/24",
          "-o", "parent=par0.10", "vlan10")  # fmt: skip
    links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True).stdout
    if probe.returncode != 0:
        assert p.returncode == 125 and "no 802.1q VLAN support" in p.stderr, p.stderr
        assert "par0.10" not in links
        assert b("network", "ls", "-q", "--filter", "name=vlan10").stdout.strip() == ""
        pytest.skip("this kernel has no VLAN support: only the error path was checked")
    assert p.returncode == 0, p.stderr
    assert "par0.10@par0" in links
    b("network", "rm", "vlan10", check=True)
    links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True).stdout
    assert "par0.10" not in links
    # A sub-interface that was there before is used and left alone.
    b("network", "create", "-d", "macvlan", "--subnet", "10.89.0.0/24", "-o", "parent=par0.9",
      "vlan9", check=True)  # fmt: skip
    b("network", "rm", "vlan9", check=True)
    links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True).stdout
    assert "par0.9@par0" in links
