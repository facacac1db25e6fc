"""A running container explained from the kernel's side, not from Berth's records.

Everything here is read from /proc/PID (namespaces, cgroup membership,
capabilities, seccomp, mounts, network view) and from cgroupfs; the image
store is asked only to put names on the overlay's lower directories and the
record supplies only the PID to start from. So this shows what the kernel
enforces -- the point of the view, e.g. when a runtime ignored an option or
someone changed a limit behind the engine's back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from engine.cgroups import detect, open_cgroup
from engine.containers import records
from engine.containers.records import Container
from engine.errors import EngineError, InvalidState
from engine.runtime.caps import caps_from_mask
from engine.runtime.oci import pid_alive

_OCTAL = re.compile(r"\\([0-7]{3})")
_SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}


def _unescape(s: str) -> str:
    """mountinfo escapes space, tab, newline, backslash (and overlay: comma) as \\ooo."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), s)


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


# -- namespaces -------------------------------------------------------------------------


def namespaces(eng, c: Container) -> list[dict[str, Any]]:
    """Each namespace of the process: inode, shared with the host?, with which containers?

    "Host" is this process's own namespace, except for net when the engine
    treats a named netns as its host (``config.host_netns``).
    """
    pid = c.pid
    others: list[Container] = [
        o
        for o in records.load_all(eng.db)
        if o.id != c.id and o.state in records.ACTIVE and pid_alive(o.pid)
    ]
    out = []
    for t in sorted(os.listdir(f"/proc/{pid}/ns")):
        if t.endswith("_for_children"):
            continue  # same as the plain one unless the process unshared after start
        ino = _ns_inode(f"/proc/{pid}/ns/{t}")
        host = f"/proc/self/ns/{t}"
        if t == "net" and eng.config.host_netns:
            from engine.netns import netns_path

            host = str(netns_path(eng.config.host_netns))
        shared = [o.name for o in others if _ns_inode(f"/proc/{o.pid}/ns/{t}") == ino]
        out.append(
            {
                "Type": t,
                "Inode": ino,
                "SharedWithHost": ino is not None and ino == _ns_inode(host),
                "SharedWith": shared,
            }
        )
    return out


# -- cgroup -------------------------------------------------------------------------------


def _cgroup_path(pid: int) -> tuple[str, dict[str, str]]:
    """The process's cgroup (memory controller's on v1, the unified one on v2) and all lines."""
    lines: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _hid, ctl, path = line.split(":", 2)
        lines[ctl or "unified"] = path
    main = lines.get("memory") or lines.get("unified") or next(iter(lines.values()), "/")
    return main, lines


def cgroup(pid: int) -> dict[str, Any]:
    """Membership, each limit beside current use, throttling, OOM kills, PSI."""
    path, per_hierarchy = _cgroup_path(pid)
    layout = detect()
    out: dict[str, Any] = {"Path": path, "Version": layout.version, "Hierarchies": per_hierarchy}
    if path.strip("/") == "":
        return out  # the root cgroup: no limits to show
    cg = open_cgroup(layout, path)
    try:
        s, lim = cg.stats(), cg.limits()
    except EngineError as e:
        out["Error"] = str(e)
        return out
    quota, period = lim.cpu_quota, lim.cpu_period
    has_quota = quota is not None and quota > 0 and period
    out["Memory"] = {
        "Usage": s.memory_raw_usage,
        "UsageNoCache": s.memory_usage,  # what `stats` shows
        "MaxUsage": s.memory_max_usage,
        "Limit": lim.memory,  # -1: unlimited
        "SwapLimit": lim.memory_swap,  # memory+swap, as --memory-swap
        "Reservation": lim.memory_reservation,
        "OOMKills": s.oom_kill_count,
    }
    out["CPU"] = {
        "QuotaUs": quota,
        "PeriodUs": period,
        "Cpus": round(quota / period, 3) if has_quota else None,
        "Shares": lim.cpu_shares,
        "CpusetCpus": lim.cpuset_cpus,
        "UsageNs": s.cpu_usage_ns,
        "UserNs": s.cpu_user_ns,
        "SystemNs": s.cpu_system_ns,
        "Periods": s.nr_periods,
        "ThrottledPeriods": s.throttled_periods,
        "ThrottledTimeNs": s.throttled_time_ns,
    }
    out["Pids"] = {"Current": s.pids_current, "Limit": lim.pids_limit}
    out["BlockIO"] = {"ReadBytes": s.blkio_read_bytes, "WriteBytes": s.blkio_write_bytes}
    psi = {"cpu": s.cpu_pressure, "memory": s.memory_pressure, "io": s.io_pressure}
    out["Pressure"] = {k: v for k, v in psi.items() if v is not None}  # "some avg10" %
    try:
        out["Frozen"] = cg.frozen()
    except EngineError:
        out["Frozen"] = None
    out["_procs"] = cg.procs()
    return out


# -- security ---------------------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _cap_names(hexmask: str) -> list[str]:
    from engine.runtime.caps import CAP_BITS

    return sorted(caps_from_mask(int(hexmask or "0", 16)), key=CAP_BITS.__getitem__)


def security(pid: int) -> dict[str, Any]:
    st = _status(pid)
    uid = st.get("Uid", "").split()
    gid = st.get("Gid", "").split()
    return {
        "CapEff": _cap_names(st.get("CapEff", "0")),
        "CapPrm": _cap_names(st.get("CapPrm", "0")),
        "CapBnd": _cap_names(st.get("CapBnd", "0")),
        "CapInh": _cap_names(st.get("CapInh", "0")),
        "CapAmb": _cap_names(st.get("CapAmb", "0")),
        "Seccomp": _SECCOMP_MODES.get(st.get("Seccomp", ""), st.get("Seccomp", "unknown")),
        "SeccompFilters": int(st.get("Seccomp_filters", "0") or 0),
        "NoNewPrivs": st.get("NoNewPrivs") == "1",
        "Uid": int(uid[1]) if len(uid) > 1 else None,  # effective
        "Gid": int(gid[1]) if len(gid) > 1 else None,
        "Groups": [int(g) for g in st.get("Groups", "").split()],
    }


# -- filesystem ---------------------------------------------------------------------------


def _mountinfo(pid: int) -> list[dict[str, Any]]:
    out = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if len(f) < 6 or len(r) < 2:
            continue
        out.append(
            {
                "Destination": _unescape(f[4]),
                "Type": r[0],
                "Source": _unescape(r[1]),
                "Root": _unescape(f[3]),
                "Options": f[5],
                "SuperOptions": [
                    _unescape(o) for o in (r[2] if len(r) > 2 else "").split(",") if o
                ],
                "ReadOnly": "ro" in f[5].split(","),
            }
        )
    return out


def _name_volumes(eng, mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark the mounts that are volumes with their name ("Volume"). mountinfo gives a
    bind mount's path inside its filesystem (Root), which ends like the volume's
    <volumes>/<name>/_data whatever the filesystem is mounted at."""
    from engine.volumes import mountpoint

    names = [r["name"] for r in eng.db.query("SELECT name FROM volumes")]
    data = {str(mountpoint(eng.config, n)): n for n in names}
    for m in mounts:
        root = m["Root"]
        if not root.endswith("/_data"):
            continue
        for path, name in data.items():
            if path == root or path.endswith(root):
                m["Volume"] = name
                break
    return mounts


def rootfs(eng, c: Container, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The "/" mount, its overlay lowerdirs named as the image's layers, the upper dir's size."""
    from engine.images.layerstore import dir_size

    root = next((m for m in reversed(mounts) if m["Destination"] == "/"), None)
    if root is None:
        return {}
    opts = dict(o.partition("=")[::2] for o in root["SuperOptions"])
    out: dict[str, Any] = {"Type": root["Type"], "ReadOnly": root["ReadOnly"]}
    if root["Type"] != "overlay":
        out["Source"] = root["Source"]
        return out
    infos = []
    try:
        infos = eng.images.layer_infos(eng.images.get_by_id(c.image_id))
    except EngineError:
        pass  # image gone from the store: still list the dirs
    layers = []
    # overlay lists lowerdir top first; show them in image order, base first.
    for d in reversed([x for x in opts.get("lowerdir", "").split(":") if x]):
        # Relative lowerdirs come from a mount made inside the layers dir (many layers).
        info = next((i for i in infos if str(i.path) == d or str(i.path).endswith("/" + d)), None)
        layers.append(
            {
                "Dir": str(info.path) if info else d,
                "DiffID": info.diff_id if info else "",
                "ChainID": info.chain_id if info else "",
                "Size": info.size if info else None,
            }
        )
    upper = opts.get("upperdir", "")
    out.update(
        {
            "Layers": layers,
            "UpperDir": upper,
            "UpperSize": dir_size(Path(upper)) if upper and os.path.isdir(upper) else None,
            "WorkDir": opts.get("workdir", ""),
        }
    )
    return out


# -- network ------------------------------------------------------------------------------


def _links_in_netns() -> list[dict[str, Any]]:
    """Runs inside the container's netns (forked child of run_in_netns)."""
    from pyroute2 import IPRoute  # imported by the parent already: no import lock in the child

    links: dict[int, dict[str, Any]] = {}
    with IPRoute() as ipr:
        for ln in ipr.get_links():
            links[ln["index"]] = {
                "Index": ln["index"],
                "Name": ln.get_attr("IFLA_IFNAME"),
                "State": ln.get_attr("IFLA_OPERSTATE"),
                "Up": bool(ln["flags"] & 1),
                "MAC": ln.get_attr("IFLA_ADDRESS"),
                "MTU": ln.get_attr("IFLA_MTU"),
                "Addresses": [],
            }
        for a in ipr.get_addr():
            if a["index"] in links:
                links[a["index"]]["Addresses"].append(
                    f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                )
    return sorted(links.values(), key=lambda x: x["Index"])


def interfaces(pid: int) -> list[dict[str, Any]]:
    import pyroute2  # noqa: F401  (import before forking, see _links_in_netns)

    from engine.containers.stats import read_net_dev
    from engine.netns import run_in_netns

    links = run_in_netns(f"/proc/{pid}/ns/net", _links_in_netns)
    counters = read_net_dev(pid, with_lo=True)
    for ln in links:
        n = counters.get(ln["Name"], {})
        ln["RxBytes"], ln["TxBytes"] = n.get("rx_bytes"), n.get("tx_bytes")
    return links


# -- processes ----------------------------------------------------------------------------


def processes(pids: list[int]) -> list[dict[str, Any]]:
    out = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            st = _status(pid)
        except OSError:
            continue  # exited meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        nspid = st.get("NSpid", "").split()
        args = [a.decode(errors="replace") for a in cmd.split(b"\0") if a]
        out.append(
            {
                "Pid": pid,
                "PPid": int(fields[1]),
                "NsPid": int(nspid[-1]) if nspid else None,  # as the container sees it
                "State": fields[0],
                "Uid": int(st.get("Uid", "0").split()[1]),
                "Cmd": " ".join(args) or "[" + stat.split("(", 1)[1].rsplit(")", 1)[0] + "]",
            }
        )
    return sorted(out, key=lambda p: p["Pid"])


def anatomy(eng, c: Container) -> dict[str, Any]:
    if c.state not in records.ACTIVE or not pid_alive(c.pid):
        raise InvalidState(f"container {c.name} is not running", obj=c.name)
    pid = c.pid
    mounts = _mountinfo(pid)
    cg = cgroup(pid)
    procs = cg.pop("_procs", None) or [pid]
    try:
        ifaces: list[dict[str, Any]] | dict[str, str] = interfaces(pid)
    except EngineError as e:
        ifaces = {"Error": str(e)}
    out = {
        "Id": c.id,
        "Name": c.name,
        "Pid": pid,
        "Namespaces": namespaces(eng, c),
        "Cgroup": cg,
        "Security": security(pid),
        "RootFS": rootfs(eng, c, mounts),
        "Mounts": _name_volumes(eng, [m for m in mounts if m["Destination"] != "/"]),
        "Interfaces": ifaces,
        "Processes": processes(procs),
    }
    if not pid_alive(pid):
        raise InvalidState(f"container {c.name} exited while it was being read", obj=c.name)
    return out
