"""CPU percentage the way the docker CLI computes it for ``docker stats``."""

from __future__ import annotations

import os
from pathlib import Path

from engine.cgroups.base import CgroupStats
from engine.errors import HostNotReady

# /proc/stat counts USER_HZ ticks (fixed at 100 by the kernel ABI); docker
# assumes the same constant rather than asking sysconf.
_NS_PER_TICK = 1_000_000_000 // 100


def read_system_cpu_ns(proc_stat: Path = Path("/proc/stat")) -> int:
    """Host CPU time in ns: the first seven fields of /proc/stat's ``cpu`` line, as docker sums them."""
    try:
        with open(proc_stat, encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] == "cpu":
                    # user nice system idle iowait irq softirq (steal/guest excluded, as docker does)
                    return sum(int(x) for x in parts[1:8]) * _NS_PER_TICK
    except OSError as err:
        raise HostNotReady(f"cannot read {proc_stat}: {err.strerror}", obj=str(proc_stat)) from err
    raise HostNotReady(f"no cpu line in {proc_stat}", obj=str(proc_stat))


def online_cpus() -> int:
    """CPUs online on the host (docker uses sysconf(_SC_NPROCESSORS_ONLN))."""
    return os.sysconf("SC_NPROCESSORS_ONLN") or 1


def cpu_percent(
    prev: CgroupStats,
    cur: CgroupStats,
    prev_system_ns: int,
    cur_system_ns: int,
    online_cpus: int,
) -> float:
    """cpuDelta / systemDelta * onlineCPUs * 100; 0.0 when either delta is not positive."""
    cpu_delta = (cur.cpu_usage_ns or 0) - (prev.cpu_usage_ns or 0)
    system_delta = cur_system_ns - prev_system_ns
    if cpu_delta <= 0 or system_delta <= 0:
        return 0.0
    return cpu_delta / system_delta * online_cpus * 100.0
