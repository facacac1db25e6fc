"""Limits are enforced by the kernel: memory (OOM kill), pids (fork fails), cpu (CFS quota).

Real containers through the real CLI; the checks read the container's own
cgroup files, not Berth's records.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from engine.cgroups import detect

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def cg_file(env, cid: str, controller: str, v1_name: str, v2_name: str) -> str:
    """A control file of the container's cgroup on either cgroup version."""
    layout = detect()
    if layout.version == "v2":
        return (layout.unified / env.prefix / cid / v2_name).read_text().strip()
    return (layout.controllers[controller] / env.prefix / cid / v1_name).read_text().strip()


def memsw_accounting() -> bool:
    layout = detect()
    if layout.version == "v2":
        return True
    return (layout.controllers["memory"] / "memory.memsw.limit_in_bytes").exists()


def run_d(env, *args: str) -> str:
    p = env.berth("run", "-d", *args)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def wait_for(pred, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_memory_limit_oom_kills_and_is_recorded(busybox_env):
    swap = ["--memory-swap", "8m"] if memsw_accounting() else []
    # `tail` keeps the last "line" of a newline-free stream: it buffers all 64 MiB.
    p = busybox_env.berth(
        "run", "--name", "oom", "-m", "8m", *swap,
        "busybox", "sh", "-c", "head -c 64m /dev/zero | tail",
        timeout=60,
    )  # fmt: skip
    assert p.returncode == 137, (p.returncode, p.stderr)
    st = busybox_env.berth("inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", "oom")
    assert st.stdout.split() == ["true", "137"], st.stdout + st.stderr


def test_pids_limit_stops_forks_inside_only(busybox_env):
    # The subshell dies at the first failed fork; the outer shell reports and stays.
    script = "(for i in $(seq 1 40); do sleep 120 & done) 2>&1; echo forks-failed; sleep 120"
    cid = run_d(busybox_env, "--name", "forky", "--pids-limit", "20", "busybox", "sh", "-c", script)

    def logs() -> str:
        p = busybox_env.berth("logs", cid)
        return p.stdout + p.stderr

    wait_for(lambda: "forks-failed" in logs(), what="the fork loop")
    assert "can't fork" in logs()
    assert cg_file(busybox_env, cid, "pids", "pids.max", "pids.max") == "20"
    current = int(cg_file(busybox_env, cid, "pids", "pids.current", "pids.current"))
    assert 15 <= current <= 20
    # The host's own forks are not limited.
    host = subprocess.run(
        ["sh", "-c", "for i in $(seq 1 40); do true & done; wait; echo ok"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert host.returncode == 0 and host.stdout.strip() == "ok"
    assert busybox_env.berth("rm", "-f", cid).returncode == 0


def test_cpus_sets_cfs_quota_and_throttles(busybox_env):
    cid = run_d(busybox_env, "--cpus", "0.5", "busybox", "sh", "-c", "while :; do :; done")
    if detect().version == "v2":
        assert cg_file(busybox_env, cid, "cpu", "", "cpu.max") == "50000 100000"
    else:
        assert cg_file(busybox_env, cid, "cpu", "cpu.cfs_quota_us", "") == "50000"
        assert cg_file(busybox_env, cid, "cpu", "cpu.cfs_period_us", "") == "100000"

    def throttled() -> int:
        for line in cg_file(busybox_env, cid, "cpu", "cpu.stat", "cpu.stat").splitlines():
            k, _, v = line.partition(" ")
            if k in ("nr_throttled",):
                return int(v)
        return 0

    wait_for(lambda: throttled() > 0, what="CFS throttling")
    # Half a CPU at most, whatever else the host does; give the sampling some room.
    p = busybox_env.berth("stats", "--no-stream", "--format", "{{.CPUPerc}}", cid)
    assert p.returncode == 0, p.stderr
    assert float(p.stdout.strip().rstrip("%")) < 75.0, p.stdout
    assert busybox_env.berth("rm", "-f", cid).returncode == 0


def test_limits_show_in_anatomy(busybox_env):
    cid = run_d(
        busybox_env, "-m", "32m", "--cpus", "0.5", "--pids-limit", "30", "busybox", "sleep", "60"
    )
    a = busybox_env.engine().container_anatomy(cid)
    cg = a["Cgroup"]
    assert cg["Memory"]["Limit"] == 32 * 1024 * 1024
    assert cg["CPU"]["QuotaUs"] == 50000 and cg["CPU"]["Cpus"] == 0.5
    assert cg["Pids"]["Limit"] == 30 and cg["Pids"]["Current"] >= 1
    assert Path(f"/proc/{a['Pid']}").exists()
    assert busybox_env.berth("rm", "-f", cid).returncode == 0
