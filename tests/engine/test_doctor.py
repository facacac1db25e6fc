"""The network doctor against real breakage: a healthy setup is all ok, then one
thing at a time is broken by hand (in the test-made host namespace only) and the
doctor must name exactly that, and nothing else, as failing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.network import nft, store, sysctl
from engine.network.doctor import Report, diagnose, render_text
from tests.conftest import REPO

pytestmark = pytest.mark.root

SUBNET = "10.91.0.0/24"
GATEWAY = "10.91.0.1"


def _failing(report: Report) -> set[tuple[str, str | None]]:
    return {(f.check, f.details.get("network")) for f in report.failed}


def _only(report: Report, check: str) -> list:
    return [f for f in report.findings if f.check == check]


def _healthy(report: Report) -> None:
    bad = [f for f in report.findings if f.status != "ok"]
    assert not bad, render_text(report)


def _eventually_healthy(eng, container: str, target: str, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        report = diagnose(eng, container, target)
        if not [f for f in report.findings if f.status != "ok"] or time.monotonic() > deadline:
            return _healthy(report)
        time.sleep(0.5)


def _host(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", env.host_netns, *args], capture_output=True, text=True, check=True
    )


def _cli(env, *args: str) -> subprocess.CompletedProcess:
    """The real CLI, with the diagnose module added under `network` (main.py's EXTENDS)."""
    code = (
        "import sys; from engine.cli import main; "
        "main.EXTENDS['network'] = (*main.EXTENDS.get('network', ()), 'engine.cli.cmd_diagnose'); "
        "sys.exit(main.main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env.env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO),
    )


@pytest.fixture
def app(net_env):
    """Network `app` with containers a and b on it."""
    b = net_env.berth
    b("network", "create", "--subnet", SUBNET, "app", check=True)
    for name in ("a", "b"):
        b("run", "-d", "--name", name, "--network", "app", "busybox", "sleep", "300", check=True)
    return net_env


def test_healthy_setup_is_all_ok_and_a_reaches_b(app):
    eng = app.engine()
    report = diagnose(eng, "a", "b")
    _healthy(report)
    reach = _only(report, "reachability")
    assert [f.status for f in reach] == ["ok"]
    assert reach[0].details["ip"].startswith("10.91.0.")
    # What the container's namespace shows, read by the kernel.
    (summary,) = _only(report, "interfaces")
    assert "eth0 10.91.0." in summary.message and f"default via {GATEWAY}" in summary.message
    # Features built elsewhere are reported as skipped, not failed.
    assert {f.check for f in report.findings if f.details.get("skipped")} == {"published-ports"}

    p = _cli(app, "network", "diagnose", "--json", "a", "b")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["ok"] is True and data["container"] == "a" and data["target"] == "b"
    assert {f["status"] for f in data["findings"]} == {"ok"}
    assert set(data["findings"][0]) == {"check", "status", "message", "details"}
    p = _cli(app, "network", "diagnose")
    assert p.returncode == 0 and "no problems found" in p.stdout, p.stdout + p.stderr


def test_missing_masquerade_rule_is_named(app):
    eng = app.engine()
    rules = nft.list_rules(app.host_netns, app.prefix)["chains"]["postrouting"]["rules"]
    (rule,) = [r for r in rules if (r["comment"] or "").startswith("masquerade app ")]
    _host(app, "nft", "delete", "rule", "inet", app.prefix, "postrouting", "handle", str(rule["handle"]))  # fmt: skip
    try:
        report = diagnose(eng, "a", "b")
        assert _failing(report) == {("nat", "app")}, render_text(report)
        (f,) = report.failed
        assert "NAT (masquerade) rule for network app" in f.message and SUBNET in f.message
        # The other network's rule is still there, and said so.
        assert [x.status for x in _only(report, "nat") if x.details["network"] == "bridge"] == [
            "ok"
        ]
    finally:
        eng.sync_firewall()
    _healthy(diagnose(eng))


def test_veth_host_end_down_is_named(app):
    eng = app.engine()
    cid = eng.get_container("a").id
    (ep,) = store.endpoints_of_container(eng.db, cid)
    subprocess.run(["ip", "-n", app.host_netns, "link", "set", ep.host_ifname, "down"], check=True)
    try:
        report = diagnose(eng, "a", "b")
        assert _failing(report) == {("veth", "app")}, render_text(report)
        (f,) = report.failed
        assert f.details["host_interface"] == ep.host_ifname and f.details["container"] == "a"
        assert f"{ep.host_ifname}" in f.message and "is down" in f.message
        assert f"link set {ep.host_ifname} up" in f.message
        # Symptoms name the cause instead of failing on their own.
        (reach,) = _only(report, "reachability")
        assert reach.status == "warn" and reach.details["causes"] == ["veth (app, eth0)"]
        assert [x.status for x in _only(report, "link") if x.details["interface"] == "eth0"] == [
            "warn"
        ]
    finally:
        subprocess.run(["ip", "-n", app.host_netns, "link", "set", ep.host_ifname, "up"])
    # While the link was down, a's ARP entry for b went FAILED; the kernel answers
    # "unreachable" from it until it probes again, so give the neighbour a moment.
    _eventually_healthy(eng, "a", "b")


def test_ip_forward_off_is_named(app):
    eng = app.engine()
    sysctl.set(app.host_netns, "net.ipv4.ip_forward", "0")
    try:
        report = diagnose(eng, "a")
        assert _failing(report) == {("ip-forward", None)}, render_text(report)
        (f,) = report.failed
        assert f.message.startswith("ip_forward is 0 in the host namespace")
        assert "sysctl -w net.ipv4.ip_forward=1" in f.message
        p = _cli(app, "network", "diagnose", "a")
        assert p.returncode == 1, p.stdout + p.stderr
        assert "[FAIL] ip-forward: ip_forward is 0" in p.stdout
        assert p.stdout.count("[FAIL]") == 1
    finally:
        sysctl.set(app.host_netns, "net.ipv4.ip_forward", "1")
    _healthy(diagnose(eng, "a"))


def test_overlapping_host_route_is_named(app):
    eng = app.engine()
    # This kernel has no dummy module: a blackhole route is a route all the same.
    route = ["blackhole", "10.91.0.128/25"]
    subprocess.run(["ip", "-n", app.host_netns, "route", "add", *route], check=True)
    try:
        report = diagnose(eng, "a")
        assert _failing(report) == {("route-overlap", "app")}, render_text(report)
        (f,) = report.failed
        assert "10.91.0.128/25" in f.message and "blackhole" in f.message
        assert f.details["routes"] == ["blackhole 10.91.0.128/25"]
    finally:
        subprocess.run(["ip", "-n", app.host_netns, "route", "del", *route])
    _healthy(diagnose(eng, "a"))


def test_forward_policy_drop_is_named(app):
    eng = app.engine()
    _host(app, "iptables", "-P", "FORWARD", "DROP")
    try:
        report = diagnose(eng, "a", "b")
        assert _failing(report) == {("forward-policy", None)}, render_text(report)
        (f,) = report.failed
        assert "iptables FORWARD" in f.message and "dropped" in f.message
        (reach,) = _only(report, "reachability")
        if f.details["br_netfilter"]:
            # Bridged frames go through iptables too: a -> b is blocked, and explained.
            assert reach.status == "warn" and "forward-policy" in reach.message
        else:
            assert reach.status == "ok"
    finally:
        _host(app, "iptables", "-P", "FORWARD", "ACCEPT")
    _eventually_healthy(eng, "a", "b")


def test_containers_on_different_networks_are_isolated(app):
    b = app.berth
    b("network", "create", "--subnet", "10.92.0.0/24", "n2", check=True)
    b("run", "-d", "--name", "c", "--network", "n2", "busybox", "sleep", "300", check=True)
    report = diagnose(app.engine(), "a", "c")
    assert {f.check for f in report.failed} == {"isolation"}, render_text(report)
    (f,) = report.failed
    assert f.message.startswith(
        "isolation: a is on app and c on n2; Berth drops traffic between networks"
    )
    assert f.details["rule_present"] is True and f.details["probe"]["ok"] is False


def test_internal_network_has_no_way_out(app):
    b = app.berth
    b("network", "create", "--internal", "--subnet", "10.93.0.0/24", "inner", check=True)
    b("run", "-d", "--name", "i", "--network", "inner", "busybox", "sleep", "300", check=True)
    # The gateway of `app` lives in the test's host namespace: "outside" for inner.
    report = diagnose(app.engine(), "i", GATEWAY)
    assert _failing(report) == {("internal", "inner")}, render_text(report)
    (f,) = report.failed
    assert f.message.startswith("internal: i is on internal network inner")
    assert "no default route" in f.message and f.details["rule_present"] is True
    # The missing default route is what an internal network should have.
    (gw,) = _only(report, "gateway")
    assert gw.status == "ok" and "internal" in gw.message


def test_port_listening_inside_the_target(app):
    b = app.berth
    b("run", "-d", "--name", "web", "--network", "app", "busybox", "httpd", "-f", "-p", "8080", check=True)  # fmt: skip
    eng = app.engine()
    _healthy(diagnose(eng, "a", "web:8080"))
    # Nothing listens on 8081: that is named, and the refused connect points at it.
    report = diagnose(eng, "a", "web:8081")
    assert {f.check for f in report.failed} == {"listening"}, render_text(report)
    assert "nothing listens on tcp port 8081 inside web" in report.failed[0].message
    (reach,) = _only(report, "reachability")
    assert reach.status == "warn" and "connection refused" in reach.message
    assert reach.details["causes"] == ["listening"]
    # An address that is not a container: a refusal means the path works, the port is shut.
    report = diagnose(eng, "a", f"{GATEWAY}:1")
    assert {f.check for f in report.failed} == {"reachability"}, render_text(report)
    assert "refused tcp port 1" in report.failed[0].message
