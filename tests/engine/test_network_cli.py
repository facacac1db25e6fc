"""`berth network ...` end to end, with a network namespace made here as the engine's host.

The namespace gets a route to 172.18.0.0/16 (a blackhole, standing in for a
VPN's route): automatic subnets must skip it (read with ``ip -n NS route``).
It also gets a bridge ``pbr0``, only so that macvlan's ``parent`` has something
to find in that namespace (and not on the real host, which has no pbr0).
Berth's network code makes no kernel objects yet; the test checks that too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from engine import events

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

# Runs the CLI with networks wired in even before engine.api / cli.main know about them
# (a no-op once Engine mixes in NetworksAPI and VERB_MODULES maps "network").
SHIM = """
import sys
from engine.cli import main as m
from engine.api import Engine
from engine.api_networks import NetworksAPI
if not issubclass(Engine, NetworksAPI):
    class E(Engine, NetworksAPI):
        pass
    _orig = m.engine_from
    m.engine_from = lambda args: E(_orig(args).config)
if "engine.cli.cmd_network" not in m.VERB_MODULES:
    m.VERB_MODULES["engine.cli.cmd_network"] = "network"
sys.exit(m.main(sys.argv[1:]))
"""


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def host_ns(eng_env: Any) -> Iterator[str]:
    # Named after the engine's prefix, so the session's leak check would see a leftover.
    name = f"{eng_env.prefix}h"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "route", "add", "blackhole", "172.18.0.0/16")
        _ip("-n", name, "link", "add", "pbr0", "type", "bridge")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    assert name not in _ip("netns", "list")


@pytest.fixture
def berth(eng_env: Any, host_ns: str):
    env = {**eng_env.env, "BERTH_HOST_NETNS": host_ns}

    def run(*args: str, check: bool = True, input: str | None = None):
        p = subprocess.run(
            [sys.executable, "-c", SHIM, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            input=input,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"berth {' '.join(args)} -> {p.returncode}\n{p.stderr}")
        return p

    return run


def _links(ns: str) -> list[str]:
    return sorted(link["ifname"] for link in json.loads(_ip("-n", ns, "-j", "link", "show")))


def test_network_cli_end_to_end(berth, eng_env: Any, host_ns: str) -> None:
    nid = berth("network", "create", "--label", "team=a", "app").stdout.strip()
    assert len(nid) == 64 and all(c in "0123456789abcdef" for c in nid)

    # 172.17 went to the default bridge, 172.18 is a route of the engine's host.
    out = berth("network", "inspect", "--format", "{{json .IPAM.Config}}", "app").stdout
    assert json.loads(out) == [{"Subnet": "172.19.0.0/16", "Gateway": "172.19.0.1"}]
    out = berth("network", "inspect", "-f", "{{json .IPAM.Config}}", "bridge").stdout
    assert json.loads(out) == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]

    berth(
        "network", "create", "--subnet", "10.5.0.0/24", "--gateway", "10.5.0.254",
        "--ip-range", "10.5.0.128/25", "--internal", "-o", "com.docker.network.driver.mtu=1400",
        "backend",
    )  # fmt: skip
    [info] = json.loads(berth("network", "inspect", "backend").stdout)
    assert info["IPAM"]["Config"] == [
        {"Subnet": "10.5.0.0/24", "Gateway": "10.5.0.254", "IPRange": "10.5.0.128/25"}
    ]
    assert info["Internal"] is True and info["Driver"] == "bridge" and info["Scope"] == "local"
    assert info["Options"] == {"com.docker.network.driver.mtu": "1400"}
    assert info["Containers"] == {} and info["Labels"] == {}

    # overlap with another Berth network: refused, naming it
    p = berth("network", "create", "--subnet", "10.5.0.0/16", "clash", check=False)
    assert p.returncode == 125 and "overlaps with network backend" in p.stderr
    p = berth(
        "network", "create", "--subnet", "10.6.0.0/24", "--gateway", "10.7.0.1", "x", check=False
    )
    assert p.returncode == 125 and "not in subnet" in p.stderr

    # macvlan's parent is looked up in the engine's host netns
    p = berth("network", "create", "-d", "macvlan", "-o", "parent=eth0", "mv", check=False)
    assert p.returncode == 125 and f"network namespace {host_ns}" in p.stderr
    berth(
        "network", "create", "-d", "macvlan", "--subnet", "10.8.0.0/24", "-o", "parent=pbr0", "mv"
    )

    # ls: docker's columns, names in order, IDs truncated unless --no-trunc
    lines = berth("network", "ls").stdout.splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    rows = [line.split() for line in lines[1:]]
    assert [r[1] for r in rows] == ["app", "backend", "bridge", "host", "mv", "none"]
    assert [r[0] for r in rows if r[1] == "app"] == [nid[:12]]
    assert {r[1]: r[2] for r in rows}["none"] == "null"
    quiet = berth("network", "ls", "-q", "--no-trunc").stdout.split()
    assert nid in quiet and len(quiet) == 6
    out = berth("network", "ls", "--filter", "label=team=a", "--format", "{{.Name}} {{.Labels}}")
    assert out.stdout == "app team=a\n"
    out = berth(
        "network", "ls", "-f", "type=custom", "-f", "driver=bridge", "--format", "{{.Name}}"
    )
    assert out.stdout.split() == ["app", "backend"]

    # rm carries on past failures and exits 1
    p = berth("network", "rm", "nosuchnet", "bridge", "app", check=False)
    assert p.returncode == 1
    assert p.stdout.split() == ["app"]
    assert "network nosuchnet not found" in p.stderr
    assert "bridge is a pre-defined network and cannot be removed" in p.stderr

    # prune asks first; -f does not
    p = berth("network", "prune", input="n\n")
    assert "WARNING!" in p.stdout and "Deleted" not in p.stdout
    p = berth("network", "prune", "-f")
    assert p.stdout.splitlines()[:3] == ["Deleted Networks:", "backend", "mv"]
    left = berth("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert left == ["bridge", "host", "none"]

    # every operation left an event with its actor
    evs = [e for e in events.since(eng_env.engine().db) if e.type == "network"]
    acts = [(e.action, e.attrs.get("name")) for e in evs]
    assert ("create", "app") in acts and ("destroy", "app") in acts
    assert ("destroy", "backend") in acts and acts[-1] == ("prune", None)
    assert all(e.actor.startswith("uid:0") for e in evs)

    # in the kernel: the default bridge stays; the user networks' bridges are gone
    assert _links(host_ns) == sorted(["lo", "pbr0", f"{eng_env.prefix}0"])


def test_unreadable_host_netns_is_reported(eng_env: Any) -> None:
    env = {**eng_env.env, "BERTH_HOST_NETNS": f"{eng_env.prefix}missing"}
    p = subprocess.run(
        [sys.executable, "-c", SHIM, "network", "ls"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 125
    assert f"cannot read the routes of network namespace {eng_env.prefix}missing" in p.stderr
