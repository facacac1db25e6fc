"""`berth system check`: is this host ready to run containers, and how will it?

Each check is a small function over a ``HostProbe`` (paths, commands, limits)
so the unit tests can put a fake host behind it. Only what is safe and local
is fixed automatically (the hybrid-cgroup hugetlb mount, /run/netns, loading
overlay); changes to the host's firewall or routing are explained, never made.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.cgroups import CgroupLayout, detect, fix_hugetlb, hugetlb_problem
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.system.findings import Finding
from engine.system.orphans import find_orphans

__all__ = ["Finding", "HostProbe", "choose_runtime", "find_orphans", "preflight"]

CAP_SYS_RESOURCE = 24


def run_command(cmd: list[str], timeout: float = 10.0) -> tuple[int, str, str]:
    """(returncode, stdout, stderr); a missing program is 127, like a shell."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (FileNotFoundError, PermissionError) as err:
        return 127, "", str(err)
    except subprocess.TimeoutExpired:
        return 124, "", f"{cmd[0]} timed out after {timeout}s"
    return p.returncode, p.stdout, p.stderr


def _hard_rlimits() -> dict[str, int]:
    return {
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[1],
    }


@dataclass
class HostProbe:
    """Everything the preflight reads from the host; tests replace parts of it."""

    fs_root: Path = Path("/")
    run: Callable[[list[str]], tuple[int, str, str]] = run_command
    which: Callable[[str], str | None] = shutil.which
    rlimits: Callable[[], dict[str, int]] = _hard_rlimits
    detect_cgroups: Callable[[], CgroupLayout] = detect
    fix_cgroups: Callable[[CgroupLayout], CgroupLayout] = fix_hugetlb
    # Extra argv in front of network commands when the engine's "host" is a netns.
    netns_exec: list[str] = field(default_factory=list)

    def path(self, absolute: str) -> Path:
        return self.fs_root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        try:
            return self.path(absolute).read_text()
        except OSError:
            return None


# -- packages -------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    package: str
    why: str
    severity: str  # what a missing one means: "error" or "warn"
    commands: tuple[str, ...] = ()  # any of these on PATH
    paths: tuple[str, ...] = ()  # or any of these files
    static: bool = False  # the file must be a statically linked ELF


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("conmon", "monitors every container", "error", commands=("conmon",)),
    Requirement("crun", "the preferred OCI runtime", "warn", commands=("crun",)),
    Requirement("runc", "the fallback OCI runtime", "warn", commands=("runc",)),
    Requirement(
        "golang-github-containers-common",
        "the default seccomp profile",
        "error",
        paths=("/usr/share/containers/seccomp.json",),
    ),
    # The busybox image copies the binary into an empty rootfs: only a static one runs there.
    Requirement(
        "busybox-static",
        "the busybox base image",
        "warn",
        paths=("/bin/busybox", "/usr/bin/busybox"),
        static=True,
    ),
    Requirement("tini", "`--init`", "warn", paths=("/usr/bin/tini-static",)),
    Requirement(
        "nftables", "firewalling for bridge networks", "warn", commands=("nft", "iptables")
    ),
    Requirement(
        "redis-server", "the dashboard (broker, channel layer)", "warn", commands=("redis-server",)
    ),  # fmt: skip
)


def is_static_elf(path: Path) -> bool:
    """True for an ELF without a PT_INTERP header (no dynamic loader needed)."""
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if ident[:4] != b"\x7fELF":
                return False
            is64, little = ident[4] == 2, ident[5] == 1
            order = "little" if little else "big"

            def num(off: int, size: int) -> int:
                return int.from_bytes(ident[off : off + size], order)

            phoff = num(32, 8) if is64 else num(28, 4)
            phentsize, phnum = (num(54, 2), num(56, 2)) if is64 else (num(42, 2), num(44, 2))
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        p_type = int.from_bytes(table[i * phentsize : i * phentsize + 4], order)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def check_packages(host: HostProbe) -> list[Finding]:
    out: list[Finding] = []
    missing: list[str] = []
    for req in REQUIREMENTS:
        found = next((p for c in req.commands if (p := host.which(c))), None)
        if not found:
            for p in req.paths:
                if host.path(p).exists() and (not req.static or is_static_elf(host.path(p))):
                    found = p
                    break
        if found:
            out.append(Finding(f"pkg-{req.package}", "ok", f"{req.package}: {found}"))
            continue
        missing.append(req.package)
        out.append(
            Finding(
                f"pkg-{req.package}",
                req.severity,  # type: ignore[arg-type]
                f"{req.package} is missing: needed for {req.why}",
                hint=f"apt-get install -y {req.package}",
            )
        )
    if len(missing) > 1:
        out.append(
            Finding(
                "packages",
                "warn",
                f"{len(missing)} packages are missing",
                hint="apt-get install -y " + " ".join(missing),
            )
        )
    return out


# -- cgroups and the runtime ------------------------------------------------------------


def describe_layout(layout: CgroupLayout) -> str:
    if layout.version == "v2":
        return f"cgroup v2 (unified at {layout.unified})"
    if layout.hybrid:
        return f"cgroup v1 hybrid (v1 controllers, cgroup2 at {layout.unified})"
    return "cgroup v1"


def check_cgroups(host: HostProbe, fix: bool) -> tuple[list[Finding], CgroupLayout | None]:
    try:
        layout = host.detect_cgroups()
    except EngineError as err:
        return [Finding("cgroups", "error", f"cgroups: {err}", hint="mount cgroupfs")], None
    out = [Finding("cgroups", "ok", describe_layout(layout) + ", cgroupfs manager")]
    if layout.version == "v1":
        want = ("cpu", "memory", "pids", "freezer")
        absent = [c for c in want if c not in layout.controllers]
        if absent:
            out.append(
                Finding(
                    "cgroups-controllers",
                    "warn",
                    f"cgroup v1 controllers not mounted: {' '.join(absent)} (limits on them fail)",
                )
            )
    problem = hugetlb_problem(layout)
    if problem is None:
        return out, layout
    if not fix:
        out.append(
            Finding(
                "cgroups-hugetlb",
                "warn",
                problem,
                hint="`berth system check --fix` mounts it (safe: no cgroup uses it yet)",
            )
        )
        return out, layout
    try:
        layout = host.fix_cgroups(layout)
    except EngineError as err:
        out.append(Finding("cgroups-hugetlb", "error", f"{problem}; the fix failed: {err}"))
        return out, layout
    out.append(Finding("cgroups-hugetlb", "warn", problem, fixed=True))
    return out, layout


def _first_line(host: HostProbe, program: str) -> str | None:
    """``program --version``'s first line, or None when it does not run."""
    path = host.which(program)
    if not path:
        return None
    rc, out, _err = host.run([path, "--version"])
    if rc != 0:
        return None
    lines = out.strip().splitlines()
    return lines[0] if lines else ""


def choose_runtime(
    config: EngineConfig, layout: CgroupLayout | None, host: HostProbe | None = None
) -> tuple[str | None, str]:
    """(runtime name or None, why): crun when it runs and the cgroup layout lets it, else runc."""
    host = host or HostProbe()
    blocked = layout is not None and hugetlb_problem(layout) is not None
    crun, runc = _first_line(host, "crun"), _first_line(host, "runc")
    if config.runtime == "runc" or (config.runtime == "" and (crun is None or blocked)):
        if runc is None:
            why = "crun is blocked by the hybrid cgroup layout" if blocked else "crun is missing"
            return None, f"no usable OCI runtime: runc is missing and {why}"
        if config.runtime == "runc":
            return "runc", f"{runc} (chosen by configuration)"
        why = "crun is blocked by the hybrid cgroup layout" if blocked else "crun does not run"
        return "runc", f"{runc} ({why})"
    if config.runtime not in ("", "crun"):
        return None, f"unknown runtime {config.runtime!r}: use crun or runc"
    if crun is None:
        return None, "crun is configured but does not run"
    if blocked:
        return None, "crun is configured but the hybrid cgroup layout blocks it"
    return "crun", crun


def check_runtime(config: EngineConfig, host: HostProbe, layout: CgroupLayout | None) -> Finding:
    name, why = choose_runtime(config, layout, host)
    if name is None:
        return Finding("runtime", "error", why, hint="apt-get install -y crun runc")
    return Finding("runtime", "ok", f"OCI runtime: {name}: {why}", obj=name)


# -- kernel features and limits -----------------------------------------------------------


def check_overlay(host: HostProbe, fix: bool) -> Finding:
    def present() -> bool:
        text = host.read("/proc/filesystems") or ""
        return any(line.split()[-1:] == ["overlay"] for line in text.splitlines())

    if present():
        return Finding("overlayfs", "ok", "overlayfs is available")
    if fix and host.run(["modprobe", "overlay"])[0] == 0 and present():
        return Finding("overlayfs", "error", "overlayfs was not loaded", fixed=True)
    return Finding(
        "overlayfs",
        "error",
        "overlayfs is not in /proc/filesystems: container root filesystems cannot be mounted",
        hint="modprobe overlay",
    )


def check_userns(host: HostProbe) -> Finding:
    text = (host.read("/proc/sys/user/max_user_namespaces") or "").strip()
    if text.isdigit() and int(text) > 0:
        return Finding("userns", "ok", f"user namespaces: available (max {text})")
    return Finding("userns", "ok", "user namespaces: not available (only needed for --userns)")


def bounding_caps(host: HostProbe) -> int | None:
    for line in (host.read("/proc/self/status") or "").splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    return None


def check_caps(host: HostProbe) -> Finding:
    bnd = bounding_caps(host)
    if bnd is None:
        return Finding("capabilities", "ok", "capability bounding set: unknown")
    if bnd & (1 << CAP_SYS_RESOURCE):
        return Finding("capabilities", "ok", "CAP_SYS_RESOURCE is in the bounding set")
    # Asking the runtime for a capability outside the bounding set fails the start.
    return Finding(
        "capabilities",
        "ok",
        "CAP_SYS_RESOURCE is outside the bounding set: --privileged grants every capability "
        "in the bounding set, so not this one",
    )


def check_rlimits(host: HostProbe) -> Finding:
    lim = host.rlimits()
    shown = ", ".join(
        f"{k} {'unlimited' if v == resource.RLIM_INFINITY else v}" for k, v in lim.items()
    )
    # A container rlimit above the caller's hard limit needs CAP_SYS_RESOURCE.
    return Finding("rlimits", "ok", f"hard limits: {shown} (container --ulimit is capped to these)")


# -- networking ---------------------------------------------------------------------------


def nft_forward_drops(ruleset: str) -> list[str]:
    """``family table/chain`` of every base chain on the forward hook with policy drop."""
    found: list[str] = []
    table = chain = ""
    for raw in ruleset.splitlines():
        words = raw.split()
        if words[:1] == ["table"] and len(words) >= 3:
            table, chain = f"{words[1]} {words[2]}", ""
        elif words[:1] == ["chain"] and len(words) >= 2:
            chain = words[1]
        elif chain and "hook forward" in raw and "policy drop" in raw:
            found.append(f"{table}/{chain}")
    return found


def dockerd_pids(host: HostProbe) -> list[int]:
    pids = []
    proc = host.path("/proc")
    try:
        entries = [e for e in os.listdir(proc) if e.isdigit()]
    except OSError:
        return []
    for e in entries:
        try:
            if (proc / e / "comm").read_text().strip() == "dockerd":
                pids.append(int(e))
        except OSError:
            continue
    return sorted(pids)


def check_forward_policy(config: EngineConfig, host: HostProbe) -> Finding:
    where: list[str] = []
    rc, out, _ = host.run([*host.netns_exec, "iptables", "-S", "FORWARD"])
    if rc == 0 and "-P FORWARD DROP" in out.splitlines():
        where.append("iptables FORWARD")
    rc, out, _ = host.run([*host.netns_exec, "nft", "list", "ruleset"])
    if rc == 0:
        drops = nft_forward_drops(out)
        if where:  # iptables-nft's own chain shows up here too; name each place once
            drops = [w for w in drops if w != "ip filter/FORWARD"]
        where += drops
    if not where:
        return Finding("forward-policy", "ok", "no FORWARD drop policy")
    docker = dockerd_pids(host)
    who = f" (set by the running Docker daemon, pid {docker[0]})" if docker else ""
    p = config.prefix
    if docker:
        hint = (
            f"let Berth's bridges through without touching Docker: iptables -I DOCKER-USER -i {p}+ "
            f"-j ACCEPT; iptables -I DOCKER-USER -o {p}+ -j ACCEPT"
        )
    else:
        hint = "iptables -P FORWARD ACCEPT (or accept Berth's bridges in that chain)"
    return Finding(
        "forward-policy",
        "warn",
        f"forwarded traffic is dropped by default in {', '.join(where)}{who}: containers on "
        f"bridge networks cannot reach beyond the host, nor be reached through published ports",
        hint=hint,
    )


def check_ip_forward(host: HostProbe) -> Finding:
    if host.netns_exec:
        rc, out, _ = host.run([*host.netns_exec, "cat", "/proc/sys/net/ipv4/ip_forward"])
        value = out.strip() if rc == 0 else ""
    else:
        value = (host.read("/proc/sys/net/ipv4/ip_forward") or "").strip()
    if value == "1":
        return Finding("ip-forward", "ok", "IPv4 forwarding is on")
    if value == "0":
        return Finding(
            "ip-forward",
            "warn",
            "IPv4 forwarding is off: containers on bridge networks cannot reach other networks",
            hint="sysctl -w net.ipv4.ip_forward=1",
        )
    return Finding("ip-forward", "warn", "IPv4 forwarding state is unknown")


def check_netns_dir(host: HostProbe, fix: bool) -> Finding:
    d = host.path("/run/netns")
    if d.is_dir():
        if os.access(d, os.W_OK):
            return Finding("netns-dir", "ok", f"{d} is usable")
        return Finding("netns-dir", "error", f"{d} is not writable", obj=str(d))
    if d.exists():
        return Finding("netns-dir", "error", f"{d} is not a directory", obj=str(d))
    if not os.access(d.parent, os.W_OK):
        return Finding("netns-dir", "error", f"{d} is missing and {d.parent} is not writable")
    if fix:
        d.mkdir(mode=0o755, exist_ok=True)
        return Finding("netns-dir", "ok", f"{d} was missing", fixed=True, obj=str(d))
    # Not a problem: the first namespace creates it, as `ip netns add` does.
    return Finding("netns-dir", "ok", f"{d} does not exist yet (created on first use)")


# -- all together --------------------------------------------------------------------------


def preflight(config: EngineConfig, fix: bool, host: HostProbe | None = None) -> list[Finding]:
    """Every host check, in the order a reader wants them; ``fix`` repairs the safe ones."""
    if host is None:
        host = HostProbe()
        if config.host_netns:
            host.netns_exec = ["ip", "netns", "exec", config.host_netns]
    out = check_packages(host)
    cg, layout = check_cgroups(host, fix)
    out += cg
    out.append(check_runtime(config, host, layout))
    out.append(check_overlay(host, fix))
    out += [check_userns(host), check_caps(host), check_rlimits(host)]
    out += [check_forward_policy(config, host), check_ip_forward(host)]
    out.append(check_netns_dir(host, fix))
    return out
