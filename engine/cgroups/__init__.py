"""cgroups for the engine: layout detection, v1/v2 drivers, and small helpers.

The OCI runtime creates each container's cgroup from config.json
(``linux.cgroupsPath`` from ``oci_cgroups_path``); the engine opens the same
path with ``open_cgroup`` to update limits, read statistics, pause and clean up.
"""

from __future__ import annotations

import re

from engine.cgroups.base import (
    Cgroup,
    CgroupStats,
    Resources,
    shares_to_weight,
    weight_to_shares,
)
from engine.cgroups.cpu import cpu_percent, online_cpus, read_system_cpu_ns
from engine.cgroups.detect import CgroupLayout, detect, fix_hugetlb, hugetlb_problem
from engine.cgroups.v1 import V1Cgroup
from engine.cgroups.v2 import V2Cgroup
from engine.errors import InvalidArgument

__all__ = [
    "Cgroup",
    "CgroupLayout",
    "CgroupStats",
    "Resources",
    "V1Cgroup",
    "V2Cgroup",
    "cpu_percent",
    "detect",
    "fix_hugetlb",
    "hugetlb_problem",
    "list_children",
    "monitor_cgroup",
    "oci_cgroups_path",
    "online_cpus",
    "open_cgroup",
    "read_system_cpu_ns",
    "shares_to_weight",
    "weight_to_shares",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def open_cgroup(layout: CgroupLayout, path: str) -> Cgroup:
    """The driver for ``path`` (e.g. ``berth/abc123``) on this layout; creates nothing."""
    if layout.version == "v2":
        return V2Cgroup(layout, path)
    return V1Cgroup(layout, path)


def list_children(layout: CgroupLayout, parent: str) -> list[str]:
    """Paths of the direct children of ``parent`` (``parent/name``), in any hierarchy.

    Any hierarchy counts so that a cgroup half-removed by a crash still shows
    up to the orphan check.
    """
    rel = parent.strip("/")
    names: set[str] = set()
    for mount in layout.hierarchies():
        d = mount / rel if rel else mount
        try:
            names.update(e.name for e in d.iterdir() if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            continue
    return [f"{rel}/{n}" if rel else n for n in sorted(names)]


def oci_cgroups_path(prefix: str, container_id: str) -> str:
    """``linux.cgroupsPath`` for the cgroupfs manager: ``/<prefix>/<id>``.

    Absolute, so runc and crun place it relative to each hierarchy's root and
    not under the caller's own cgroup.
    """
    for what, value in (("prefix", prefix), ("container id", container_id)):
        if not _NAME_RE.match(value):
            raise InvalidArgument(f"invalid {what} for a cgroup path: {value!r}", obj=value)
    return f"/{prefix}/{container_id}"


def monitor_cgroup(layout: CgroupLayout, prefix: str) -> Cgroup:
    """The shared ``<prefix>-monitors`` cgroup for conmon processes, created if missing.

    conmon is started by whatever process runs the engine (the dashboard, a
    Celery worker) and would inherit its cgroup, so limits or a kill of that
    cgroup would hit the monitors. Moving them here keeps them apart.
    """
    if not _NAME_RE.match(prefix):
        raise InvalidArgument(f"invalid prefix for a cgroup name: {prefix!r}", obj=prefix)
    cg = open_cgroup(layout, f"{prefix}-monitors")
    cg.create()
    return cg
