"""`berth stats`, `berth update` and `berth container anatomy` on real containers."""

from __future__ import annotations

import json
import os

import pytest

from engine.cgroups import detect
from engine.events import since

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

MiB = 1024 * 1024


def run_d(env, *args: str) -> str:
    p = env.berth("run", "-d", *args)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def memory_limit_file(env, cid: str) -> int:
    layout = detect()
    if layout.version == "v2":
        return int((layout.unified / env.prefix / cid / "memory.max").read_text())
    return int(
        (layout.controllers["memory"] / env.prefix / cid / "memory.limit_in_bytes").read_text()
    )


# -- stats ------------------------------------------------------------------------------


def test_stats_no_stream_table_and_limits(busybox_env):
    b = busybox_env.berth
    cid = run_d(busybox_env, "--name", "s1", "-m", "32m", "busybox", "sleep", "60")
    busy = run_d(busybox_env, "--name", "busy", "busybox", "sh", "-c", "while :; do :; done")
    p = b("stats", "--no-stream")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert (
        lines[0].split()
        == "CONTAINER ID NAME CPU % MEM USAGE / LIMIT MEM % NET I/O BLOCK I/O PIDS".split()
    )
    row = next(ln for ln in lines if ln.startswith(cid[:12]))
    assert " s1 " in row and "/ 32MiB" in row
    # A busy loop shows real CPU use already in the single --no-stream sample.
    p = b("stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}} {{.PIDs}}", "busy")
    name, cpu, pids = p.stdout.split()
    assert name == "busy" and float(cpu.rstrip("%")) > 10.0 and pids == "1"
    p = b("stats", "--no-stream", "--format", "json", "s1")
    r = json.loads(p.stdout)
    assert r["ID"] == cid[:12] and r["MemUsage"].endswith(" / 32MiB") and r["NetIO"] == "0B / 0B"
    b("rm", "-f", busy)


def test_stats_json_shape_and_stopped_containers(busybox_env):
    eng = busybox_env.engine()
    cid = run_d(
        busybox_env, "--name", "j1", "-m", "16m", "--pids-limit", "9", "busybox", "sleep", "60"
    )
    first = eng.container_stats("j1")
    st = eng.container_stats("j1", prev=first)
    assert st["id"] == cid and st["name"] == "/j1"
    assert st["memory_stats"]["limit"] == 16 * MiB and st["memory_stats"]["usage"] > 0
    assert st["pids_stats"] == {"current": 1, "limit": 9}
    assert st["precpu_stats"] == first["cpu_stats"]
    cpu = st["cpu_stats"]
    assert cpu["online_cpus"] >= 1 and cpu["system_cpu_usage"] > 0
    assert set(cpu["cpu_usage"]) >= {"total_usage", "usage_in_kernelmode", "usage_in_usermode"}
    assert set(cpu["throttling_data"]) == {"periods", "throttled_periods", "throttled_time"}
    assert st["networks"] == {}  # --network none: only lo, which docker leaves out
    # No memory limit: the host's memory is the limit.
    run_d(busybox_env, "--name", "j2", "busybox", "sleep", "60")
    meminfo = open("/proc/meminfo").read().split()
    assert eng.container_stats("j2")["memory_stats"]["limit"] == int(meminfo[1]) * 1024
    # A stopped container: zeros, listed with -a only.
    busybox_env.berth("stop", "-t", "0", "j2")
    names = busybox_env.berth("stats", "--no-stream", "--format", "{{.Name}}").stdout.split()
    assert names == ["j1"]
    p = busybox_env.berth("stats", "--no-stream", "-a", "--format", "{{.Name}} {{.MemUsage}}")
    assert "j2 0B / 0B" in p.stdout.splitlines()
    assert busybox_env.berth("stats", "--no-stream", "nosuch").returncode != 0


# -- update -----------------------------------------------------------------------------


def test_update_changes_cgroup_inspect_and_survives_restart(busybox_env):
    b = busybox_env.berth
    cid = run_d(busybox_env, "--name", "u1", "-m", "32m", "busybox", "sleep", "60")
    assert memory_limit_file(busybox_env, cid) == 32 * MiB
    p = b(
        "update",
        "--memory",
        "64m",
        "--cpus",
        "1",
        "--pids-limit",
        "50",
        "--restart",
        "on-failure:3",
        "u1",
    )
    assert p.returncode == 0 and p.stdout.strip() == "u1", p.stderr
    assert memory_limit_file(busybox_env, cid) == 64 * MiB
    fmt = "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}"
    assert b("inspect", "-f", fmt, "u1").stdout.split() == [
        str(64 * MiB),
        "1000000000",
        "50",
        "on-failure",
    ]
    a = busybox_env.engine().container_anatomy("u1")["Cgroup"]
    assert a["Pids"]["Limit"] == 50 and a["CPU"]["QuotaUs"] == 100000
    eng = busybox_env.engine()
    assert any(e.action == "update" and e.id == cid for e in since(eng.db))
    # The new values go into the next config.json.
    assert b("restart", "-t", "0", "u1").returncode == 0
    assert memory_limit_file(busybox_env, cid) == 64 * MiB
    assert eng.container_anatomy("u1")["Cgroup"]["Pids"]["Limit"] == 50


def test_update_rejects_bad_values_and_updates_stopped(busybox_env):
    b = busybox_env.berth
    run_d(
        busybox_env, "--name", "u2", "-m", "32m", "--memory-swap", "32m", "busybox", "sleep", "60"
    )
    p = b("update", "-m", "64m", "u2")  # above the explicit memory+swap limit
    assert p.returncode == 1 and "memoryswap" in p.stderr
    assert b("update", "u2").returncode == 125  # no flags
    assert b("update", "--cpus", "1000", "u2").returncode == 1
    assert b("update", "-m", "64m", "--memory-swap", "128m", "u2").returncode == 0
    b("stop", "-t", "0", "u2")
    assert b("update", "-m", "48m", "u2").returncode == 0
    assert b("inspect", "-f", "{{.HostConfig.Memory}}", "u2").stdout.strip() == str(48 * MiB)
    b("start", "u2")
    cid = b("inspect", "-f", "{{.Id}}", "u2").stdout.strip()
    assert memory_limit_file(busybox_env, cid) == 48 * MiB


# -- anatomy ----------------------------------------------------------------------------


def anatomy(env, ref: str) -> dict:
    p = env.berth("container", "anatomy", "--json", ref)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def ns_of(a: dict) -> dict[str, dict]:
    return {n["Type"]: n for n in a["Namespaces"]}


def test_anatomy_reads_the_kernel(busybox_env):
    cid = run_d(busybox_env, "--name", "A", "-v", "notes:/data", "busybox", "sleep", "60")
    a = anatomy(busybox_env, "A")
    (vol,) = [m for m in a["Mounts"] if m["Destination"] == "/data"]
    assert vol["Volume"] == "notes"
    assert not any(m.get("Volume") for m in a["Mounts"] if m["Destination"] != "/data")
    ns = ns_of(a)
    assert len(ns) >= 6 and all(isinstance(n["Inode"], int) and n["Inode"] > 0 for n in ns.values())
    assert ns["net"]["SharedWithHost"] is False
    assert ns["pid"]["SharedWithHost"] is False and ns["mnt"]["SharedWithHost"] is False
    assert a["Cgroup"]["Path"].endswith("/" + cid)
    layers = a["RootFS"]["Layers"]
    assert layers and layers[0]["DiffID"].startswith("sha256:") and layers[0]["Size"] > 0
    assert a["RootFS"]["UpperDir"].endswith(f"/{cid}/upper")
    caps = a["Security"]["CapEff"]
    assert "CAP_CHOWN" in caps and "CAP_SYS_ADMIN" not in caps
    assert a["Security"]["Seccomp"] == "filter"
    assert any(m["Destination"] == "/etc/hostname" for m in a["Mounts"])
    assert [i["Name"] for i in a["Interfaces"]] == ["lo"]
    assert "127.0.0.1/8" in a["Interfaces"][0]["Addresses"]
    assert [p["NsPid"] for p in a["Processes"]] == [1] and a["Processes"][0]["Cmd"] == "sleep 60"
    human = busybox_env.berth("container", "anatomy", "A").stdout
    for section in (
        "Namespaces",
        "Cgroup",
        "Security",
        "Root filesystem",
        "Mounts",
        "Interfaces",
        "Processes",
    ):
        assert f"\n{section}\n" in human
    assert "volume notes" in human


def test_anatomy_shows_shared_namespaces(busybox_env):
    run_d(busybox_env, "--name", "A", "busybox", "sleep", "60")
    run_d(busybox_env, "--name", "B", "--network", "container:A", "busybox", "sleep", "60")
    run_d(busybox_env, "--name", "P", "--pid", "host", "--privileged", "busybox", "sleep", "60")
    b = ns_of(anatomy(busybox_env, "B"))
    assert b["net"]["SharedWith"] == ["A"] and not b["net"]["SharedWithHost"]
    assert b["pid"]["SharedWith"] == []
    a = ns_of(anatomy(busybox_env, "A"))
    assert a["net"]["SharedWith"] == ["B"]
    pa = anatomy(busybox_env, "P")
    assert ns_of(pa)["pid"]["SharedWithHost"] is True
    assert "CAP_SYS_ADMIN" in pa["Security"]["CapEff"]
    # A stopped container has no anatomy.
    busybox_env.berth("stop", "-t", "0", "B")
    p = busybox_env.berth("container", "anatomy", "B")
    assert p.returncode == 125 and "not running" in p.stderr


def test_docker_cli_arithmetic_and_units():
    from engine.containers.stats import bytes_size, cpu_percent, human_size, memory_usage

    assert bytes_size(0) == "0B" and bytes_size(1536 * 1024) == "1.5MiB"
    assert bytes_size(32 * MiB) == "32MiB" and bytes_size(7.77 * 1024 * MiB) == "7.77GiB"
    assert human_size(0) == "0B" and human_size(1234) == "1.23kB" and human_size(5e6) == "5MB"
    cpu = {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": 2}
    cur = {"cpu_usage": {"total_usage": 250}, "system_cpu_usage": 1000, "online_cpus": 2}
    assert cpu_percent({"cpu_stats": cur, "precpu_stats": cpu}) == 50.0
    assert cpu_percent({"cpu_stats": cpu, "precpu_stats": cpu}) == 0.0
    assert memory_usage({"usage": 100, "stats": {"total_inactive_file": 30}}) == 70
    assert memory_usage({"usage": 100, "stats": {"inactive_file": 130}}) == 100
