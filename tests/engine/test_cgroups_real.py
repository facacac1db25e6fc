"""The cgroup drivers against this host's real cgroupfs (v1 hybrid here, v2 elsewhere).

Every test works in its own ``bt-<random>`` cgroup and the fixtures kill and
remove whatever was made, also when the test fails. The hugetlb mount is
only looked at, never changed.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cgroups import (
    Cgroup,
    Resources,
    detect,
    hugetlb_problem,
    list_children,
    monitor_cgroup,
    open_cgroup,
)
from engine.cgroups.base import weight_to_shares
from engine.errors import Conflict, InvalidArgument

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not Path("/sys/fs/cgroup").is_dir(), reason="no cgroupfs"),
]

MiB = 1024 * 1024


def _cleanup(cg: Cgroup) -> None:
    """Best effort, each step on its own: kill, thaw, rmdir everything under the path."""
    for step in (lambda: cg.kill_all(signal.SIGKILL), cg.thaw):
        try:
            step()
        except Exception:
            pass
    try:
        cg.remove(timeout=3.0)
    except Exception:
        for top in cg.dirs():
            for dirpath, _dirs, _files in os.walk(top, topdown=False):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


@pytest.fixture
def layout():
    return detect()


@pytest.fixture
def make_cgroup(layout) -> Iterator:
    made: list[Cgroup] = []

    def make(path: str | None = None) -> Cgroup:
        cg = open_cgroup(layout, path or f"bt-{secrets.token_hex(4)}")
        made.append(cg)
        return cg

    yield make
    for cg in reversed(made):
        _cleanup(cg)
    leaked = [str(d) for cg in made for d in cg.dirs() if d.exists()]
    assert not leaked, f"cgroups left behind: {leaked}"


@pytest.fixture
def sleeper() -> Iterator:
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "60"])
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def _state(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    raise AssertionError("no State line")


def _wait_state(pid: int, want: str, timeout: float = 2.0) -> str:
    deadline = time.monotonic() + timeout
    while (state := _state(pid)) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return state


def _cgroup_lines(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cgroup").read_text().splitlines()


def test_detect_real_host(layout):
    assert layout.version in ("v1", "v2")
    if layout.version == "v1":
        assert {"memory", "pids", "cpu", "freezer"} <= set(layout.controllers)
        for ctl, mount in layout.controllers.items():
            assert mount.is_dir(), ctl
        listed = (
            (layout.unified / "cgroup.controllers").read_text().split() if layout.hybrid else []
        )
        problem = hugetlb_problem(layout)
        assert (problem is not None) == bool(listed)
        if problem:
            assert all(c in problem for c in listed)
    else:
        assert (layout.unified / "cgroup.controllers").exists()
        assert hugetlb_problem(layout) is None


def test_lifecycle(layout, make_cgroup, sleeper):
    cg = make_cgroup()
    cg.create()
    assert cg.exists()
    if layout.version == "v1":
        for mount in layout.controllers.values():
            assert (mount / cg.path).is_dir(), mount

    cg.apply(Resources(memory=64 * MiB, pids_limit=32))
    limits = cg.limits()
    assert (limits.memory, limits.pids_limit) == (64 * MiB, 32)

    p = sleeper()
    cg.move_pid(p.pid)
    assert cg.procs() == [p.pid]
    lines = _cgroup_lines(p.pid)
    if layout.version == "v1":
        assert any(
            line.split(":")[1] == "memory" and line.endswith(f"/{cg.path}") for line in lines
        )
    else:
        assert lines == [f"0::/{cg.path}"]

    s = cg.stats()
    assert s.pids_current == 1 and s.pids_limit == 32
    assert s.memory_limit == 64 * MiB
    assert s.memory_usage is not None and s.memory_usage >= 0
    assert s.cpu_usage_ns is not None and s.cpu_usage_ns >= 0
    assert s.oom_kill_count == 0

    assert _state(p.pid) == "S"
    cg.freeze()
    assert cg.frozen()
    if layout.version == "v1":
        # A v1-frozen task sits in the refrigerator, reported as D.
        assert _wait_state(p.pid, "D") == "D"
    cg.thaw()
    assert not cg.frozen()
    assert _wait_state(p.pid, "S") == "S"

    assert cg.kill_all(signal.SIGKILL) == 1
    assert p.wait(5) == -signal.SIGKILL
    assert cg.procs() == []
    cg.remove()
    assert not cg.exists()
    assert not any(d.exists() for d in cg.dirs())


def test_kill_all_while_frozen(make_cgroup, sleeper):
    cg = make_cgroup()
    cg.create()
    p = sleeper()
    cg.move_pid(p.pid)
    cg.freeze()
    assert cg.kill_all(signal.SIGKILL) == 1
    assert p.wait(5) == -signal.SIGKILL
    cg.remove()


def test_nested_remove_waits_for_busy_and_lists_children(layout, make_cgroup, sleeper):
    parent = make_cgroup()
    child = open_cgroup(layout, f"{parent.path}/ctr1")
    child.create()
    assert list_children(layout, parent.path) == [child.path]
    p = sleeper()
    child.move_pid(p.pid)
    assert parent.procs() == [p.pid]
    assert parent.procs(recursive=False) == []
    with pytest.raises(Conflict):
        parent.remove(timeout=0.2)
    assert child.exists()
    parent.kill_all(signal.SIGKILL)
    p.wait(5)
    parent.remove()
    assert not parent.exists() and not child.exists()


def test_update_limits(layout, make_cgroup):
    cg = make_cgroup()
    cg.create()
    swap_ok = (
        layout.version == "v2"
        or (layout.controllers["memory"] / cg.path / "memory.memsw.limit_in_bytes").exists()
    )
    if swap_ok:
        cg.apply(Resources(memory=64 * MiB, memory_swap=128 * MiB))
        cg.apply(Resources(memory=256 * MiB, memory_swap=512 * MiB))  # grow: needs swap first on v1
        cg.apply(Resources(memory=32 * MiB, memory_swap=64 * MiB))  # shrink: needs memory first
        got = cg.limits()
        assert (got.memory, got.memory_swap) == (32 * MiB, 64 * MiB)
        if layout.version == "v1":
            with pytest.raises(InvalidArgument):
                cg.apply(Resources(memory=128 * MiB))  # above the memsw cap
    cg.apply(
        Resources(
            memory_reservation=16 * MiB,
            cpu_quota=50000,
            cpu_period=100000,
            cpu_shares=weight_to_shares(20),
            cpuset_cpus="0",
            pids_limit=10,
        )
    )
    got = cg.limits()
    assert (got.cpu_quota, got.cpu_period, got.cpu_weight) == (50000, 100000, 20)
    assert (got.cpuset_cpus, got.pids_limit, got.memory_reservation) == ("0", 10, 16 * MiB)
    cg.apply(Resources(memory=-1, cpu_quota=-1, pids_limit=0))
    got = cg.limits()
    assert (got.memory, got.cpu_quota, got.pids_limit) == (-1, -1, -1)
    assert cg.stats().memory_limit is None


def test_monitor_cgroup(layout, make_cgroup, sleeper):
    prefix = f"bt{secrets.token_hex(3)}"
    make_cgroup(f"{prefix}-monitors")  # registers it for cleanup
    mon = monitor_cgroup(layout, prefix)
    assert mon.exists()
    p = sleeper()
    mon.move_pid(p.pid)
    assert mon.procs() == [p.pid]
    assert any(line.endswith(f"/{prefix}-monitors") for line in _cgroup_lines(p.pid))
