"""Find out how cgroups are mounted on this host, and the one hybrid-mode fix.

The answer comes from ``/proc/self/mountinfo`` rather than from guessing
directory names: hosts co-mount ``cpu,cpuacct``, name hierarchies differently,
and mount cgroup2 either at the root (pure v2) or at ``unified`` (hybrid).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from engine.cgroups import _fs
from engine.errors import HostNotReady

DEFAULT_ROOT = Path("/sys/fs/cgroup")
DEFAULT_MOUNTINFO = Path("/proc/self/mountinfo")

# Mount options of a v1 cgroup mount that are not controller names.
_NOT_CONTROLLERS = {
    "rw",
    "ro",
    "none",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
    "nofavordynmods",
}

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class CgroupLayout:
    """Where each hierarchy is mounted.

    ``controllers`` maps a controller name to its mount dir (v1: one entry per
    controller, co-mounted ones share a dir; v2: every controller listed in the
    root's ``cgroup.controllers`` maps to the unified mount). ``named`` holds v1
    named hierarchies such as ``name=systemd``. ``unified`` is the cgroup2
    mount: the whole tree on v2, the side hierarchy on a hybrid v1 host.
    """

    version: str  # "v1" or "v2"
    hybrid: bool
    controllers: dict[str, Path]
    unified: Path | None
    fs_root: Path = DEFAULT_ROOT
    named: dict[str, Path] = field(default_factory=dict)
    mountinfo: Path = DEFAULT_MOUNTINFO

    def hierarchies(self) -> list[Path]:
        """Every distinct mount a cgroup path lives in, controllers first."""
        if self.version == "v2":
            return [self.unified] if self.unified else []
        dirs: list[Path] = []
        for d in [*self.controllers.values(), *self.named.values()]:
            if d not in dirs:
                dirs.append(d)
        if self.hybrid and self.unified and self.unified not in dirs:
            dirs.append(self.unified)
        return dirs


@dataclass
class _Mount:
    point: Path
    fstype: str
    superopts: list[str]


def _unescape(s: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), s)


def _parse_mountinfo(text: str) -> list[_Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 6 or len(rf) < 3 or rf[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(_Mount(Path(_unescape(lf[4])), rf[0], rf[2].split(",")))
    return mounts


def _under(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def detect(fs_root: Path = DEFAULT_ROOT, mountinfo: Path = DEFAULT_MOUNTINFO) -> CgroupLayout:
    """Read the mount table and describe the cgroup layout under ``fs_root``."""
    text = _fs.read_text(mountinfo)
    if text is None:
        raise HostNotReady(f"cannot read {mountinfo}", obj=str(mountinfo))
    # Only mounts under fs_root count: the same hierarchy can also be mounted
    # elsewhere (bind mounts into a rootfs), and the first one under the root wins.
    mounts = [m for m in _parse_mountinfo(text) if _under(m.point, fs_root)]

    controllers: dict[str, Path] = {}
    named: dict[str, Path] = {}
    unified: Path | None = None
    for m in mounts:
        if m.fstype == "cgroup2":
            # A cgroup2 at the root itself is pure v2 and beats one at unified/.
            if unified is None or m.point == fs_root:
                unified = m.point
            continue
        for opt in m.superopts:
            if opt.startswith("name="):
                named.setdefault(opt, m.point)
            elif "=" not in opt and opt not in _NOT_CONTROLLERS:
                controllers.setdefault(opt, m.point)

    if controllers and unified != fs_root:
        return CgroupLayout(
            version="v1",
            hybrid=unified is not None,
            controllers=controllers,
            unified=unified,
            fs_root=fs_root,
            named=named,
            mountinfo=mountinfo,
        )
    if unified is not None:
        listed = (_fs.read_text(unified / "cgroup.controllers") or "").split()
        return CgroupLayout(
            version="v2",
            hybrid=False,
            controllers={c: unified for c in listed},
            unified=unified,
            fs_root=fs_root,
            named={},
            mountinfo=mountinfo,
        )
    raise HostNotReady(f"no cgroup filesystem is mounted under {fs_root}", obj=str(fs_root))


def _unified_controllers(layout: CgroupLayout) -> list[str]:
    if not (layout.hybrid and layout.unified):
        return []
    return (_fs.read_text(layout.unified / "cgroup.controllers") or "").split()


def hugetlb_problem(layout: CgroupLayout) -> str | None:
    """Explain why crun will refuse this host, or None when it will not.

    crun treats a hybrid host whose cgroup2 side lists any controller as an
    unsupported mix; on these machines that controller is hugetlb, which no v1
    hierarchy has claimed. runc does not mind.
    """
    listed = _unified_controllers(layout)
    if not listed:
        return None
    assert layout.unified is not None
    cmds = "; ".join(
        f"mkdir -p {layout.fs_root / c} && mount -t cgroup -o {c} cgroup {layout.fs_root / c}"
        for c in listed
    )
    return (
        f"hybrid cgroup host: {layout.unified}/cgroup.controllers lists {' '.join(listed)}, "
        f"so crun refuses to run containers (runc works); mounting a v1 hierarchy for "
        f"{'it' if len(listed) == 1 else 'them'} fixes it: {cmds}"
    )


def fix_hugetlb(layout: CgroupLayout) -> CgroupLayout:
    """Mount a v1 hierarchy for each controller left on the cgroup2 side; return the new layout.

    Safe to repeat: does nothing when there is no problem. Moving a controller
    to v1 only works while no cgroup2 subtree has it enabled (else EBUSY).
    """
    for ctl in _unified_controllers(layout):
        target = layout.fs_root / ctl
        target.mkdir(exist_ok=True)
        res = subprocess.run(
            ["mount", "-t", "cgroup", "-o", ctl, "cgroup", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise HostNotReady(
                f"cannot mount a v1 {ctl} hierarchy: {res.stderr.strip() or res.returncode}",
                obj=str(target),
            )
    new = detect(layout.fs_root, layout.mountinfo)
    problem = hugetlb_problem(new)
    if problem:
        raise HostNotReady(problem, obj=str(layout.unified))
    return new
