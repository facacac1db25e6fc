"""The doctor's published-ports and dns checks against real breakage: a healthy
container is all ok, then one thing at a time is broken by hand (in the test's
host namespace, or inside the container) and the doctor must name exactly that,
and nothing else, as failing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from engine.network import doctor, nft, ports, resolver
from engine.network.doctor import Report, diagnose, render_text

pytestmark = pytest.mark.root

SUBNET = "10.94.0.0/24"
GATEWAY = "10.94.0.1"
HOST_PORT = 18090


@pytest.fixture(autouse=True)
def plugins():
    """Register the two checks for these tests only (doctor.py imports them once the
    lead wires them in); the other doctor tests expect them skipped until then."""
    saved = dict(doctor._PLUGINS)  # before the import, which registers them too
    from engine.network import doctor_dns, doctor_ports

    doctor.register_check(doctor_ports.CHECK, doctor_ports.check_published_ports)
    doctor.register_check(doctor_dns.CHECK, doctor_dns.check_dns)
    yield
    doctor._PLUGINS.clear()
    doctor._PLUGINS.update(saved)


def _failing(report: Report) -> set[tuple[str, str | None]]:
    return {(f.check, f.details.get("what")) for f in report.failed}


def _of(report: Report, check: str, what: str) -> list:
    return [f for f in report.findings if f.check == check and f.details.get("what") == what]


def _healthy(report: Report) -> None:
    bad = [f for f in report.findings if f.status != "ok"]
    assert not bad, render_text(report)


def _wait_healthy(eng, name: str, timeout: float = 10.0) -> Report:
    """The resolver may still be loading the container that just started."""
    deadline = time.monotonic() + timeout
    while True:
        report = diagnose(eng, name)
        if all(f.status == "ok" for f in report.findings) or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


@pytest.fixture
def web(net_env):
    """Network `app`; container `web` serving 127.0.0.1:HOST_PORT -> 80 with httpd
    (daemonised, so it can be killed while the container runs on)."""
    b = net_env.berth
    b("network", "create", "--subnet", SUBNET, "app", check=True)
    b("run", "-d", "--name", "web", "--network", "app", "-p", f"127.0.0.1:{HOST_PORT}:80",
      "busybox", "sh", "-c", "echo hi > /tmp/i; httpd -p 80 -h /tmp; sleep 300", check=True)  # fmt: skip
    deadline = time.monotonic() + 10
    from engine.network.doctor_ports import container_listeners

    eng = net_env.engine()
    while not container_listeners(eng.get_container("web").pid, "tcp", 80):
        assert time.monotonic() < deadline, "httpd did not start in web"
        time.sleep(0.05)
    return net_env


def test_healthy_container_is_all_ok(web):
    eng = web.engine()
    report = _wait_healthy(eng, "web")
    _healthy(report)
    # Every step of both checks ran (none skipped).
    assert {f.details.get("what") for f in report.findings if f.check == "published-ports"} == {
        "dnat",
        "listening",
        "host-port",
        "route-localnet",
    }
    assert {f.details.get("what") for f in report.findings if f.check == "dns"} == {
        "resolv.conf",
        "resolver",
        "listener",
        "query",
    }
    (q,) = _of(report, "dns", "query")
    assert q.details["addrs"] == [q.details["want"]] and q.details["want"].startswith("10.94.0.")
    (held,) = _of(report, "published-ports", "host-port")
    assert "held for web by the port keeper" in held.message

    # Without a container: every running container with ports is checked.
    ctx = doctor._context(eng, Report())
    doctor.check_firewall(ctx)
    from engine.network.doctor_ports import check_published_ports

    found = check_published_ports(ctx, None, None)
    assert found and {f.details["container"] for f in found} == {"web"}
    assert all(f.status == "ok" for f in found)

    # The default bridge: names do not resolve there, by design, and that is not a failure.
    web.berth("run", "-d", "--name", "plain", "--network", "bridge", "busybox", "sleep", "300",
              check=True)  # fmt: skip
    report = diagnose(eng, "plain")
    _healthy(report)
    (d,) = [f for f in report.findings if f.check == "dns"]
    assert d.details["what"] == "default-bridge" and "by design" in d.message
    # No published ports: that check is skipped, as before.
    (p,) = [f for f in report.findings if f.check == "published-ports"]
    assert p.details.get("skipped") is True


def test_missing_dnat_rule_is_named(web):
    eng = web.engine()
    rules = nft.list_rules(web.host_netns, web.prefix)["chains"]["prerouting"]["rules"]
    (rule,) = [r for r in rules if f":{HOST_PORT} -> " in (r["comment"] or "")]
    subprocess.run(
        ["ip", "netns", "exec", web.host_netns, "nft", "delete", "rule", "inet", web.prefix,
         "prerouting", "handle", str(rule["handle"])],
        check=True,
    )  # fmt: skip
    try:
        report = diagnose(eng, "web")
        assert _failing(report) == {("published-ports", "dnat")}, render_text(report)
        (f,) = report.failed
        assert f.message.startswith(
            f"the DNAT rule for published port 127.0.0.1:{HOST_PORT}->80/tcp of web is missing"
        )
        assert "chain prerouting" in f.message and "chain output" not in f.message
        assert f.details["port"] == "80/tcp" and f.details["network"] == "app"
    finally:
        eng.sync_firewall()
    _healthy(_wait_healthy(eng, "web"))


def test_stopped_listener_is_named(web):
    eng = web.engine()
    web.berth("exec", "web", "killall", "httpd", check=True)  # no pkill applet here
    deadline = time.monotonic() + 10
    while True:
        report = diagnose(eng, "web")
        if report.failed or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert _failing(report) == {("published-ports", "listening")}, render_text(report)
    (f,) = report.failed
    assert "nothing listens on 80/tcp inside web" in f.message
    # Started again, it is found again.
    web.berth("exec", "web", "httpd", "-p", "80", "-h", "/tmp", check=True)
    _healthy(_wait_healthy(eng, "web"))


def test_stopped_resolver_is_named(web):
    eng = web.engine()
    _healthy(_wait_healthy(eng, "web"))
    assert resolver.stop_resolver(eng)
    try:
        report = diagnose(eng, "web")
        assert _failing(report) == {("dns", "resolver")}, render_text(report)
        (f,) = report.failed
        assert f.message.startswith("Berth's DNS resolver is not running")
        # The unanswered query is its symptom, and says so.
        (q,) = _of(report, "dns", "query")
        assert q.status == "warn" and "explained by the resolver check" in q.message
    finally:
        resolver.ensure_resolver(eng)
    _healthy(_wait_healthy(eng, "web"))


def test_wrong_nameserver_is_named(web):
    eng = web.engine()
    b = web.berth
    original = b("exec", "web", "cat", "/etc/resolv.conf", check=True).stdout
    b("exec", "web", "sh", "-c", "echo nameserver 1.2.3.4 > /etc/resolv.conf", check=True)
    try:
        report = diagnose(eng, "web")
        assert _failing(report) == {("dns", "resolv.conf")}, render_text(report)
        (f,) = report.failed
        assert "wrong nameserver 1.2.3.4" in f.message and GATEWAY in f.message
        assert f.details["nameservers"] == ["1.2.3.4"]
    finally:
        b("exec", "-i", "web", "sh", "-c", "cat > /etc/resolv.conf", input=original.encode())
    _healthy(_wait_healthy(eng, "web"))


def test_host_port_taken_after_the_keeper_lost_it_names_the_holder(web):
    eng = web.engine()
    c = eng.get_container("web")
    from engine import helpers

    assert helpers.stop(eng, ports.KEEPER)  # the keeper dies: the reservation with it
    squat = (
        "import socket, sys, time; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {HOST_PORT})); s.listen(1); print('up', flush=True); time.sleep(300)"
    )
    p = subprocess.Popen(
        ["ip", "netns", "exec", web.host_netns, sys.executable, "-c", squat],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "up"
        report = diagnose(eng, "web")
        assert _failing(report) == {("published-ports", "host-port")}, render_text(report)
        (f,) = report.failed
        assert f"pid {p.pid}" in f.message and "no longer holds it" in f.message
    finally:
        os.kill(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    # Nobody has it now: a warning (traffic still flows), until it is held again.
    report = diagnose(eng, "web")
    assert not report.failed, render_text(report)
    (w,) = _of(report, "published-ports", "host-port")
    assert w.status == "warn" and "no longer reserved" in w.message
    reserved = [ports.Reserved.from_dict(d) for d in c.extra["ports"]]
    assert ports.rehold(eng, c.id, reserved, web.host_netns)
    _healthy(_wait_healthy(eng, "web"))


def test_route_localnet_off_is_named_for_a_loopback_binding(web):
    from engine.network import sysctl

    eng = web.engine()
    bridge = eng.get_container("web").extra["port_target"]["bridge"]
    key = f"net/ipv4/conf/{bridge}/route_localnet"
    sysctl.set(web.host_netns, key, "0")
    try:
        report = diagnose(eng, "web")
        assert _failing(report) == {("published-ports", "route-localnet")}, render_text(report)
        (f,) = report.failed
        assert f"route_localnet is 0 on bridge {bridge}" in f.message
        assert f"sysctl -w net.ipv4.conf.{bridge}.route_localnet=1" in f.message
    finally:
        sysctl.set(web.host_netns, key, "1")
    _healthy(_wait_healthy(eng, "web"))


def test_target_host_port_names_the_publisher(net_env):
    """`diagnose CLIENT host:PORT`: the host as the container sees it (its gateway), who
    publishes that port, and whether the hairpin through the DNAT rule answers."""
    b = net_env.berth
    b("network", "create", "--subnet", SUBNET, "app", check=True)
    b("network", "create", "--subnet", "10.95.0.0/24", "other", check=True)
    b("run", "-d", "--name", "web", "--network", "app", "-p", f"{HOST_PORT}:80",
      "busybox", "sh", "-c", "echo hi > /tmp/i; httpd -p 80 -h /tmp; sleep 300", check=True)  # fmt: skip
    b("run", "-d", "--name", "client", "--network", "other", "busybox", "sleep", "300",
      check=True)  # fmt: skip
    eng = net_env.engine()
    from engine.network.doctor_ports import container_listeners

    deadline = time.monotonic() + 10
    while not container_listeners(eng.get_container("web").pid, "tcp", 80):
        assert time.monotonic() < deadline, "httpd did not start in web"
        time.sleep(0.05)
    report = diagnose(eng, "client", f"host:{HOST_PORT}")
    (pub,) = [f for f in report.findings if f.check == "published"]
    assert pub.status == "ok" and "published by web (-> 80/tcp)" in pub.message
    assert "10.95.0.1" in pub.message  # the host's address on client's own network
    (reach,) = [f for f in report.findings if f.check == "reachability"]
    assert reach.status == "ok", render_text(report)

    # A port nobody publishes: said so, and the probe is refused by the host.
    report = diagnose(eng, "client", f"host:{HOST_PORT + 1}")
    (pub,) = [f for f in report.findings if f.check == "published"]
    assert pub.status == "warn" and "no running container publishes" in pub.message
    (reach,) = [f for f in report.findings if f.check == "reachability"]
    assert reach.status == "fail" and "refused" in reach.message

    # No network at all: nothing leads to the host.
    b("run", "-d", "--name", "lonely", "--network", "none", "busybox", "sleep", "300", check=True)
    report = diagnose(eng, "lonely", "host:80")
    assert any("no bridge network" in f.message for f in report.failed), render_text(report)
