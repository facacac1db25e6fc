"""``docker stats`` for Berth: the Docker stats JSON of one container, and table rows.

One sample is a dict in the shape of Docker's ``GET /containers/{id}/stats``
(``cpu_stats``, ``precpu_stats``, ``memory_stats``, ``pids_stats``,
``blkio_stats``, ``networks``...), read from the container's cgroup and its
network namespace. The CLI's numbers are computed from two samples the way
the docker CLI does (cli/command/container/stats_helpers.go), so a dashboard
that speaks Docker's JSON and ``berth stats`` agree with ``docker stats``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import units
from engine.cgroups import CgroupStats, detect, online_cpus, open_cgroup, read_system_cpu_ns
from engine.containers.records import Container
from engine.errors import EngineError
from engine.units import bytes_size  # noqa: F401 - re-exported for callers

ZERO_TIME = "0001-01-01T00:00:00Z"

# Docker's table: `docker stats` default format and its column headers.
STATS_TABLE = (
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t"
    "{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
)
STATS_HEADERS = {
    "Container": "CONTAINER",
    "ID": "CONTAINER ID",
    "Name": "NAME",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}


def _rfc3339_nano(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_MEMTOTAL: int = 0


def host_memory() -> int:
    """MemTotal in bytes: Docker's ``limit`` when the container has no memory limit."""
    global _MEMTOTAL
    if not _MEMTOTAL:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    _MEMTOTAL = int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return _MEMTOTAL


def read_net_dev(pid: int, with_lo: bool = False) -> dict[str, dict[str, int]]:
    """Per-interface counters of the netns ``pid`` lives in, without ``lo`` unless asked (docker leaves it out).

    /proc/PID/net is the view of that process's network namespace, so no
    setns (or fork) is needed.
    """
    out: dict[str, dict[str, int]] = {}
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        name = name.strip()
        f = rest.split()
        if (name == "lo" and not with_lo) or len(f) < 16:
            continue
        v = [int(x) for x in f]
        out[name] = {
            "rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
            "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10], "tx_dropped": v[11],
        }  # fmt: skip
    return out


def _cpu_block(s: CgroupStats | None, system_ns: int, ncpu: int) -> dict[str, Any]:
    s = s or CgroupStats()
    return {
        "cpu_usage": {
            "total_usage": s.cpu_usage_ns or 0,
            "usage_in_kernelmode": s.cpu_system_ns or 0,
            "usage_in_usermode": s.cpu_user_ns or 0,
        },
        "system_cpu_usage": system_ns,
        "online_cpus": ncpu,
        "throttling_data": {
            "periods": s.nr_periods or 0,
            "throttled_periods": s.throttled_periods or 0,
            "throttled_time": s.throttled_time_ns or 0,
        },
    }


def _v1_failcnt(layout, path: str) -> int | None:
    mem = layout.controllers.get("memory") if layout.version == "v1" else None
    if mem is None:
        return None
    try:
        return int((mem / path / "memory.failcnt").read_text())
    except (OSError, ValueError):
        return None


def sample(eng, c: Container, prev: dict | None = None) -> dict[str, Any]:
    """One Docker-shaped stats reading of ``c``; ``prev`` (an earlier sample) fills precpu.

    A container that is not running gives zeros (what Docker returns for a
    stopped container), so callers need not special-case it.
    """
    now = time.time()
    ncpu = online_cpus()
    cg_stats: CgroupStats | None = None
    failcnt = None
    if c.state in ("running", "paused"):
        layout = detect()
        path = f"{eng.config.prefix}/{c.id}"
        try:
            cg_stats = open_cgroup(layout, path).stats()
            failcnt = _v1_failcnt(layout, path)
        except EngineError:
            cg_stats = None  # exited between the lookup and the read
    system_ns = read_system_cpu_ns()
    running = cg_stats is not None
    s = cg_stats or CgroupStats()
    mem_limit = host_memory()
    if s.memory_limit is not None and (not mem_limit or s.memory_limit < mem_limit):
        mem_limit = s.memory_limit
    memory: dict[str, Any] = {}
    if running:
        memory = {
            "usage": s.memory_raw_usage or 0,
            "max_usage": s.memory_max_usage or 0,
            "stats": dict(s.memory_stat),
            "limit": mem_limit,
        }
        if failcnt is not None:
            memory["failcnt"] = failcnt
    pids: dict[str, int] = {}
    if running:
        pids["current"] = s.pids_current or 0
        if s.pids_limit:
            pids["limit"] = s.pids_limit
    blkio: dict[str, Any] = {"io_service_bytes_recursive": None}
    if running and (s.blkio_read_bytes is not None or s.blkio_write_bytes is not None):
        # Totals over every device (the driver sums them); docker's CLI sums by op too.
        blkio["io_service_bytes_recursive"] = [
            {"major": 0, "minor": 0, "op": "read", "value": s.blkio_read_bytes or 0},
            {"major": 0, "minor": 0, "op": "write", "value": s.blkio_write_bytes or 0},
        ]
    out: dict[str, Any] = {
        "read": _rfc3339_nano(now) if running else ZERO_TIME,
        "preread": prev["read"] if prev else ZERO_TIME,
        "pids_stats": pids,
        "blkio_stats": blkio,
        "num_procs": 0,
        "cpu_stats": _cpu_block(s if running else None, system_ns if running else 0, ncpu),
        "precpu_stats": prev["cpu_stats"] if prev else _cpu_block(None, 0, 0),
        "memory_stats": memory,
        "name": "/" + c.name,
        "id": c.id,
    }
    # --network host shares the host's counters: docker reports none for it.
    if running and c.opts.network != "host":
        out["networks"] = read_net_dev(c.pid)
    return out


# -- the docker CLI's arithmetic and formatting ----------------------------------------


def cpu_percent(st: dict) -> float:
    """docker CLI calculateCPUPercentUnix: container delta / system delta * cpus * 100."""
    cur, pre = st["cpu_stats"], st["precpu_stats"]
    cpu_delta = cur["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
    sys_delta = cur["system_cpu_usage"] - pre["system_cpu_usage"]
    ncpu = cur.get("online_cpus") or 1
    if cpu_delta > 0 and sys_delta > 0:
        return cpu_delta / sys_delta * ncpu * 100.0
    return 0.0


def memory_usage(mem: dict) -> int:
    """docker CLI calculateMemUsageUnixNoCache: usage minus inactive file pages."""
    usage = mem.get("usage", 0)
    stats = mem.get("stats") or {}
    # v1 names it total_inactive_file, v2 inactive_file.
    inactive = stats.get("total_inactive_file", stats.get("inactive_file"))
    if inactive is not None and inactive < usage:
        return usage - inactive
    return usage


def human_size(n: float) -> str:
    """go-units HumanSizeWithPrecision(n, 3) (decimal): 1.23kB."""
    return units.human_size(n, 3)


def row(st: dict, ref: str = "", no_trunc: bool = False) -> dict[str, str]:
    """The fields of ``docker stats --format '{{json .}}'`` from one sample (with precpu)."""
    running = st["read"] != ZERO_TIME
    mem = st["memory_stats"]
    rx = tx = rd = wr = 0
    for n in (st.get("networks") or {}).values():
        rx += n["rx_bytes"]
        tx += n["tx_bytes"]
    for e in st["blkio_stats"].get("io_service_bytes_recursive") or []:
        if e["op"].lower() == "read":
            rd += e["value"]
        elif e["op"].lower() == "write":
            wr += e["value"]
    used = memory_usage(mem) if running else 0
    limit = mem.get("limit", 0) if running else 0
    mem_pct = used / limit * 100.0 if limit else 0.0
    cid = st["id"] if no_trunc else st["id"][:12]
    return {
        "Container": ref or cid,
        "ID": cid,
        "Name": st["name"].lstrip("/"),
        "CPUPerc": f"{cpu_percent(st) if running else 0.0:.2f}%",
        "MemUsage": f"{bytes_size(used)} / {bytes_size(limit)}",
        "MemPerc": f"{mem_pct:.2f}%",
        "NetIO": f"{human_size(rx)} / {human_size(tx)}",
        "BlockIO": f"{human_size(rd)} / {human_size(wr)}",
        "PIDs": str(st["pids_stats"].get("current", 0)),
    }


def rows(
    eng,
    targets: list[tuple[str, Container]],
    prev: dict[str, dict],
    *,
    no_trunc: bool = False,
    first_gap: float = 0.5,
) -> list[dict[str, str]]:
    """Table rows for ``targets`` ((ref, container) pairs); ``prev`` is updated in place.

    ``prev`` maps container ID to its last sample. Containers seen for the
    first time get a baseline read, one shared pause of ``first_gap``
    seconds, then the real read, so CPU % means something even for
    ``--no-stream`` (docker's first frame has an empty precpu instead).
    """
    fresh = [c for _, c in targets if c.id not in prev and c.state in ("running", "paused")]
    if fresh:
        for c in fresh:
            prev[c.id] = sample(eng, c)
        time.sleep(first_gap)
    out = []
    for ref, c in targets:
        st = sample(eng, c, prev.get(c.id))
        prev[c.id] = st
        out.append(row(st, ref, no_trunc))
    return out
