"""Build an OCI runtime-spec (1.0.2) ``config.json`` the way Docker/Podman would.

The caller resolves everything image- and user-specific (capabilities with
``caps.resolve_caps``, the seccomp profile with ``seccomp.load_*``, uid/gid with
``users.resolve_user``, namespace paths) and hands it over as a ``SpecInput``;
this module adds the defaults and host-dependent adjustments and checks what a
runtime would otherwise reject with an obscure message.
"""

from __future__ import annotations

import os
import resource
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import HostNotReady, InvalidArgument
from engine.runtime.caps import DEFAULT_CAPS, normalize_cap

OCI_VERSION = "1.0.2"
NAMESPACE_TYPES = ("pid", "network", "ipc", "uts", "mount", "cgroup")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHM_SIZE = 64 << 20
INIT_PATH = "/dev/init"  # where the init binary appears in the container (as Podman)
RLIM_INFINITY_OCI = 2**64 - 1

MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Podman's defaults for root; Docker's daemon uses nofile 1048576 too. Both are
# above this host's hard limits, so they are clamped (see _rlimits).
DEFAULT_RLIMITS: tuple[tuple[str, int, int], ...] = (
    ("RLIMIT_NOFILE", 1048576, 1048576),
    ("RLIMIT_NPROC", 4194304, 4194304),
)
# Linux's generic numbering (asm-generic/resource.h); Python's resource module
# lacks RLIMIT_LOCKS, so fall back to these where it has no constant.
_GENERIC_RLIMITS = (
    "cpu fsize data stack core rss nproc nofile memlock as locks sigpending msgqueue nice "
    "rtprio rttime"
).split()
_RLIMITS = {
    name: getattr(resource, "RLIMIT_" + name.upper(), number)
    for number, name in enumerate(_GENERIC_RLIMITS)
}

# Sysctls that are namespaced, and which namespace makes them so (Docker's list).
_IPC_SYSCTLS = frozenset(
    "kernel.msgmax kernel.msgmnb kernel.msgmni kernel.sem kernel.shmall kernel.shmmax "
    "kernel.shmmni kernel.shm_rmid_forced".split()
)
_UTS_SYSCTLS = frozenset({"kernel.hostname", "kernel.domainname"})


def _dev_rule(kind: str, major: int | None, minor: int | None, access: str = "rwm") -> dict:
    rule: dict[str, Any] = {"allow": True, "type": kind, "access": access}
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    return rule


# Deny everything, then what every container needs (runc's/Docker's allow list).
DEFAULT_DEVICE_RULES: tuple[dict, ...] = (
    {"allow": False, "access": "rwm"},
    _dev_rule("c", None, None, "m"),  # mknod of any char device (c *:* m)
    _dev_rule("b", None, None, "m"),  # mknod of any block device (b *:* m)
    _dev_rule("c", 1, 3),  # null
    _dev_rule("c", 1, 5),  # zero
    _dev_rule("c", 1, 7),  # full
    _dev_rule("c", 1, 8),  # random
    _dev_rule("c", 1, 9),  # urandom
    _dev_rule("c", 5, 0),  # tty
    _dev_rule("c", 5, 1),  # console
    _dev_rule("c", 5, 2),  # ptmx
    _dev_rule("c", 136, None),  # pts/*
)


@dataclass
class Resources:
    memory: int | None = None  # bytes
    memory_swap: int | None = None  # memory + swap, bytes; -1 = unlimited
    cpu_quota: int | None = None  # microseconds per period
    cpu_period: int | None = None  # microseconds
    cpu_shares: int | None = None
    pids_limit: int | None = None  # <= 0 = unlimited
    cpuset_cpus: str | None = None  # "0-2,4"


def default_namespaces() -> dict[str, str | None]:
    """New namespaces for everything; a private cgroup namespace only on cgroup v2 (as Podman)."""
    ns: dict[str, str | None] = dict.fromkeys(("pid", "network", "ipc", "uts", "mount"))
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        ns["cgroup"] = None
    return ns


@dataclass
class SpecInput:
    args: list[str]
    rootfs: Path | str
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    terminal: bool = False
    hostname: str = ""
    readonly_rootfs: bool = False
    mounts: list[dict] = field(default_factory=list)
    # type -> namespace path to join, or None for a new one; absent types share the host's.
    namespaces: dict[str, str | None] = field(default_factory=default_namespaces)
    caps: list[str] = field(default_factory=lambda: list(DEFAULT_CAPS))
    privileged: bool = False
    no_new_privileges: bool = False
    seccomp: dict | None = None  # OCI linux.seccomp; None = unconfined
    # The user's --ulimit values (type, soft, hard); -1 = unlimited.
    rlimits: list[tuple[str, int, int]] = field(default_factory=list)
    cgroups_path: str = ""
    resources: Resources = field(default_factory=Resources)
    shm_size: int = DEFAULT_SHM_SIZE
    tmpfs: list[str] = field(default_factory=list)  # Docker's "--tmpfs PATH[:OPTIONS]"
    sysctls: dict[str, str] = field(default_factory=dict)
    oom_score_adj: int | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    init: bool = False
    init_binary: str = "/usr/bin/tini-static"


def _mount(dest: str, kind: str, source: str, options: list[str]) -> dict:
    return {"destination": dest, "type": kind, "source": source, "options": options}


def _default_mounts(s: SpecInput) -> list[dict]:
    host_net = "network" not in s.namespaces
    host_ipc = "ipc" not in s.namespaces
    sys_opts = ["nosuid", "noexec", "nodev"] + ([] if s.privileged else ["ro"])
    if host_net:
        # sysfs shows the network devices of the mounter's netns; with the host's
        # netns, bind the host's /sys (as Docker/Podman) rather than mount a new one.
        sysfs = _mount("/sys", "bind", "/sys", ["rbind", *sys_opts])
    else:
        sysfs = _mount("/sys", "sysfs", "sysfs", sys_opts)
    if host_ipc:
        # Sharing the host's IPC namespace means sharing its POSIX shm and mqueues too.
        shm = _mount("/dev/shm", "bind", "/dev/shm", ["rbind", "nosuid", "noexec", "nodev"])
        mqueue = _mount(
            "/dev/mqueue", "bind", "/dev/mqueue", ["rbind", "nosuid", "noexec", "nodev"]
        )
    else:
        if s.shm_size <= 0:
            raise InvalidArgument(
                f"invalid shm size {s.shm_size}: must be positive", obj="shm_size"
            )
        shm = _mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            ["nosuid", "noexec", "nodev", "mode=1777", f"size={s.shm_size}"],
        )
        mqueue = _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"])
    cgroup_opts = ["nosuid", "noexec", "nodev"] + ([] if s.privileged else ["ro"])
    return [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        sysfs,
        _mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup_opts),
        mqueue,
        shm,
    ]


def _tmpfs_mount(spec: str) -> dict:
    dest, _, opts = spec.partition(":")
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid tmpfs {spec!r}: destination must be absolute", obj=spec)
    # Docker's defaults; an explicit exec/suid/dev (or its no- form) replaces the default.
    options = ["noexec", "nosuid", "nodev"]
    for o in filter(None, opts.split(",")):
        flag = o[2:] if o.startswith("no") else o
        if flag in ("exec", "suid", "dev"):
            options = [x for x in options if x not in (flag, "no" + flag)]
        options.append(o)
    return _mount(os.path.normpath(dest), "tmpfs", "tmpfs", options)


def _user_mounts(s: SpecInput) -> list[dict]:
    mounts = []
    for m in s.mounts:
        dest = m.get("destination")
        if not isinstance(dest, str) or not dest.startswith("/"):
            raise InvalidArgument(
                f"mount destination {dest!r} must be an absolute path", obj=str(dest)
            )
        mounts.append(
            {
                "destination": os.path.normpath(dest),
                "type": m.get("type") or "bind",
                "source": m.get("source", ""),
                "options": list(m.get("options") or []),
            }
        )
    mounts += [_tmpfs_mount(t) for t in s.tmpfs]
    if s.init:
        if not os.path.isfile(s.init_binary):
            raise HostNotReady(
                f"--init needs {s.init_binary} (Debian package tini)", obj=s.init_binary
            )
        mounts.append(_mount(INIT_PATH, "bind", s.init_binary, ["bind", "ro", "nosuid", "nodev"]))
    seen: set[str] = set()
    for m in mounts:
        if m["destination"] in seen:
            raise InvalidArgument(f"duplicate mount point {m['destination']}", obj=m["destination"])
        seen.add(m["destination"])
    # Parents before children, so a bind under a tmpfs is not hidden by it.
    return sorted(mounts, key=lambda m: m["destination"].rstrip("/").count("/"))


def _mounts(s: SpecInput) -> list[dict]:
    user = _user_mounts(s)
    dests = {m["destination"] for m in user}
    over_dev = "/dev" in dests
    # A user mount replaces the default at the same place; one on /dev replaces
    # every default under /dev as well (Docker's rule).
    defaults = [
        m
        for m in _default_mounts(s)
        if m["destination"] not in dests and not (over_dev and m["destination"].startswith("/dev/"))
    ]
    return defaults + user


def _rlimit_type(name: str) -> tuple[str, int]:
    short = name.strip().lower().removeprefix("rlimit_")
    if short not in _RLIMITS:
        raise InvalidArgument(f"unknown ulimit type {name!r}", obj=name)
    return "RLIMIT_" + short.upper(), _RLIMITS[short]


def _oci_limit(value: int) -> int:
    return RLIM_INFINITY_OCI if value < 0 or value == resource.RLIM_INFINITY else value


def _rlimits(user: list[tuple[str, int, int]]) -> list[dict]:
    # A process without CAP_SYS_RESOURCE (root here lacks it) cannot raise a hard
    # limit, and the runtime inherits ours: anything above our hard limit would
    # make setrlimit fail with EPERM inside the runtime.
    out: dict[str, dict] = {}
    for name, soft, hard in DEFAULT_RLIMITS:
        oci, res = _rlimit_type(name)
        host_hard = resource.getrlimit(res)[1]
        if host_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, host_hard), min(hard, host_hard)
        out[oci] = {"type": oci, "hard": hard, "soft": soft}
    for name, soft, hard in user:
        oci, res = _rlimit_type(name)
        soft, hard = _oci_limit(soft), _oci_limit(hard)
        if soft > hard:
            raise InvalidArgument(
                f"ulimit {name}: soft limit {soft} is above the hard limit {hard}", obj=name
            )
        host_hard = resource.getrlimit(res)[1]
        if host_hard != resource.RLIM_INFINITY and hard > host_hard:
            raise InvalidArgument(
                f"ulimit {name}={soft}:{hard} exceeds the host's hard limit {host_hard} "
                f"(raising it needs CAP_SYS_RESOURCE, which the engine does not have)",
                obj=name,
            )
        out[oci] = {"type": oci, "hard": hard, "soft": soft}
    return list(out.values())


def _check_sysctls(s: SpecInput) -> None:
    for key in s.sysctls:
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            ns = "ipc"
        elif key.startswith("net."):
            ns = "network"
        elif key in _UTS_SYSCTLS:
            ns = "uts"
        else:
            raise InvalidArgument(
                f"sysctl {key!r} is not allowed: it is not namespaced and would change the host",
                obj=key,
            )
        if ns not in s.namespaces:
            raise InvalidArgument(
                f"sysctl {key!r} cannot be set: the container shares the host's {ns} namespace",
                obj=key,
            )


def _resources(s: SpecInput) -> dict:
    r = s.resources
    out: dict[str, Any] = {}
    if s.privileged:
        out["devices"] = [{"allow": True, "access": "rwm"}]
    else:
        out["devices"] = [dict(d) for d in DEFAULT_DEVICE_RULES]
    memory: dict[str, int] = {}
    if r.memory is not None:
        if r.memory < 6 << 20:
            raise InvalidArgument("minimum memory limit allowed is 6MB", obj="memory")
        memory["limit"] = r.memory
    if r.memory_swap is not None:
        if r.memory is None:
            raise InvalidArgument("a swap limit needs a memory limit too", obj="memory_swap")
        if r.memory_swap != -1 and r.memory_swap < r.memory:
            raise InvalidArgument(
                "memory-swap (memory plus swap) must not be smaller than memory", obj="memory_swap"
            )
        memory["swap"] = r.memory_swap
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    if r.cpu_shares is not None:
        if r.cpu_shares < 2:
            raise InvalidArgument(f"cpu shares {r.cpu_shares} must be at least 2", obj="cpu_shares")
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota is not None:
        if r.cpu_quota != -1 and r.cpu_quota < 1000:
            raise InvalidArgument("cpu quota must be at least 1000us (1ms)", obj="cpu_quota")
        cpu["quota"] = r.cpu_quota
    if r.cpu_period is not None:
        if not 1000 <= r.cpu_period <= 1_000_000:
            raise InvalidArgument("cpu period must be between 1000us and 1s", obj="cpu_period")
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if cpu:
        out["cpu"] = cpu
    if r.pids_limit is not None:
        out["pids"] = {"limit": r.pids_limit if r.pids_limit > 0 else -1}
    return out


def host_devices(root: str = "/dev") -> list[dict]:
    """Every char/block device under /dev, for --privileged (runc's HostDevices rules)."""
    skip_dirs = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}
    out = []
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if e.name not in skip_dirs:
                    stack.append(e.path)
                continue
            # The runtime makes the container's own console; the host's is not for it.
            if e.path == "/dev/console":
                continue
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else ""
            if kind:
                out.append(
                    {
                        "path": e.path,
                        "type": kind,
                        "major": os.major(st.st_rdev),
                        "minor": os.minor(st.st_rdev),
                        "fileMode": stat.S_IMODE(st.st_mode),
                        "uid": st.st_uid,
                        "gid": st.st_gid,
                    }
                )
    return sorted(out, key=lambda d: d["path"])


def _process(s: SpecInput) -> dict:
    if not s.args:
        raise InvalidArgument("no command given: the image has no entrypoint or cmd", obj="args")
    if not s.cwd.startswith("/"):
        raise InvalidArgument(f"working directory {s.cwd!r} must be absolute", obj=s.cwd)
    env = list(s.env)
    names = {e.partition("=")[0] for e in env}
    # Without PATH the runtime cannot find a bare command name; Docker adds these too.
    if "PATH" not in names:
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if s.hostname and "HOSTNAME" not in names:
        env.append(f"HOSTNAME={s.hostname}")
    if s.terminal and "TERM" not in names:
        env.append("TERM=xterm")
    caps = [c for c in (normalize_cap(c) for c in s.caps) if c != "ALL"]
    caps = list(dict.fromkeys(caps))
    args = ([INIT_PATH, "--"] if s.init else []) + list(s.args)
    proc: dict[str, Any] = {
        "terminal": s.terminal,
        "user": {"uid": s.uid, "gid": s.gid, "additionalGids": list(s.additional_gids)},
        "args": args,
        "env": env,
        "cwd": s.cwd,
        # No inheritable set: since CVE-2022-24769 Docker/Podman leave it empty.
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": _rlimits(s.rlimits),
        "noNewPrivileges": s.no_new_privileges,
    }
    if s.oom_score_adj is not None:
        if not -1000 <= s.oom_score_adj <= 1000:
            raise InvalidArgument(
                f"oom score adj {s.oom_score_adj} must be -1000..1000", obj="oom_score_adj"
            )
        proc["oomScoreAdj"] = s.oom_score_adj
    return proc


def build_spec(s: SpecInput) -> dict:
    """The config.json dict for one container."""
    unknown = set(s.namespaces) - set(NAMESPACE_TYPES)
    if unknown:
        raise InvalidArgument(
            f"unknown namespace type(s): {', '.join(sorted(unknown))}", obj="namespaces"
        )
    namespaces = dict(s.namespaces)
    # A container always gets its own mount table: sharing the host's would make
    # the rootfs pivot and every mount below happen on the host.
    namespaces.setdefault("mount", None)
    if s.hostname and "uts" not in namespaces:
        raise InvalidArgument(
            "a hostname cannot be set when sharing the host's UTS namespace", obj="hostname"
        )
    _check_sysctls(s)

    linux: dict[str, Any] = {
        "namespaces": [
            {"type": t, "path": p} if p else {"type": t}
            for t in NAMESPACE_TYPES
            if t in namespaces
            for p in (namespaces[t],)
        ],
        "resources": _resources(s),
        "devices": host_devices() if s.privileged else [],
    }
    if s.cgroups_path:
        linux["cgroupsPath"] = s.cgroups_path
    if s.sysctls:
        linux["sysctl"] = dict(s.sysctls)
    if not s.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        if s.seccomp is not None:
            linux["seccomp"] = s.seccomp

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": _process(s),
        "root": {"path": str(s.rootfs), "readonly": s.readonly_rootfs},
        "mounts": _mounts(s),
        "linux": linux,
    }
    if s.hostname:
        spec["hostname"] = s.hostname
    if s.annotations:
        spec["annotations"] = dict(s.annotations)
    return spec
