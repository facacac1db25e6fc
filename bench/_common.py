"""Shared helpers for the benchmarks in bench/ (run them with the venv's python).

A benchmark gets a throwaway engine instance (its own root, run directory and
kernel-object prefix), times real ``berth`` commands in subprocesses, and
checks afterwards that the instance left nothing behind in the kernel
(mounts, cgroups, network namespaces, monitor processes).
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
BERTH = VENV_BIN / "berth"
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# Statistics -------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def p90(xs: Sequence[float]) -> float:
    """Nearest-rank 90th percentile (a value that was actually measured)."""
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def pct(xs: Sequence[float], q: float) -> float:
    """Nearest-rank ``q`` percentile (0 < q <= 100) of measured values."""
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "OVER"


def timed(argv: Sequence[str], *, env: dict | None = None, check: bool = True) -> float:
    """Wall time of one command in milliseconds (stdout/stderr discarded unless it fails)."""
    start = time.perf_counter()
    p = subprocess.run(
        list(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ms = (time.perf_counter() - start) * 1000
    if check and p.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {p.returncode}: {p.stderr.decode(errors='replace').strip()}"
        )
    return ms


def once(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` wrapped to run at most once (a clean-up called early and again at exit)."""
    done = False

    def wrapper():
        nonlocal done
        if done:
            return None
        done = True
        return fn()

    return wrapper


def sigterm_as_interrupt() -> None:
    """SIGTERM/SIGHUP raise KeyboardInterrupt, so ``finally`` clean-ups run as on Ctrl-C."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


# Processes and mounts ---------------------------------------------------------


def processes_with(marker: str) -> dict[int, list[str]]:
    """PID -> argv of every process (not this one) whose command line contains ``marker``."""
    found = {}
    me = os.getpid()
    needle = marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            raw = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in raw:
            found[int(name)] = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    return found


def mounts_under(*dirs: Path) -> list[str]:
    """Mount points below any of ``dirs`` (from /proc/self/mountinfo), deepest first."""
    prefixes = [str(d).rstrip("/") + "/" for d in dirs]
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if any(mp.startswith(p) or mp + "/" == p for p in prefixes):
            out.append(mp)
    return sorted(set(out), key=lambda m: -m.count("/"))


def umount_all_under(*dirs: Path) -> None:
    for mp in mounts_under(*dirs):
        subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL, check=False)


def rmdir_cgroup_tree(d: Path) -> bool:
    """Remove an (empty of processes) cgroup directory and its children; True when gone."""
    if not d.is_dir():
        return True
    for child in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            child.rmdir()
        except OSError:
            pass
    try:
        d.rmdir()
    except OSError:
        return False
    return True


def cgroup_controllers() -> list[Path]:
    return [c for c in CGROUP_ROOT.iterdir() if c.is_dir() and not c.is_symlink()]


# Engine instances -------------------------------------------------------------


class Instance:
    """A throwaway Berth engine: BERTH_ROOT in a temp dir, BERTH_RUN /run/bbench-XXXX."""

    def __init__(self, tag: str = "bench"):
        suffix = secrets.token_hex(3)
        self.prefix = "bb" + suffix  # 8 characters: interface names stay short
        self.tmp = Path(tempfile.mkdtemp(prefix=f"berth-{tag}-"))
        self.root = self.tmp / "root"
        # Short: conmon's attach socket (<run>/containers/<64-hex id>/attach)
        # must fit in sun_path; the engine allows 100 bytes, so 4 hex digits here.
        while True:
            self.run = Path(f"/run/bbench-{secrets.token_hex(2)}")
            if not self.run.exists():
                break
        self.env = dict(os.environ)
        self.env.update(
            BERTH_ROOT=str(self.root), BERTH_RUN=str(self.run), BERTH_PREFIX=self.prefix
        )

    # Commands
    def argv(self, *args: str) -> list[str]:
        return [str(BERTH), *args]

    def berth(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        p = subprocess.run(
            self.argv(*args),
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise RuntimeError(f"berth {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
        return p

    def bootstrap_busybox(self) -> None:
        self.berth("image", "bootstrap", "busybox")

    def busybox_rootfs(self) -> Path:
        """The unpacked busybox layer (busybox:latest is one layer)."""
        from engine.api import Engine
        from engine.config import EngineConfig

        eng = Engine(EngineConfig(root=self.root, run=self.run, prefix=self.prefix))
        dirs = eng.images.layer_dirs("busybox:latest")
        if len(dirs) != 1:
            raise RuntimeError(f"busybox:latest has {len(dirs)} layers, expected 1")
        return dirs[0]

    def container_ids(self) -> list[str]:
        return self.berth("ps", "-aq", "--no-trunc").stdout.split()

    # What the instance holds in the kernel
    def conmon_pids(self) -> list[int]:
        return [
            pid
            for pid, argv in processes_with(str(self.root)).items()
            if argv and os.path.basename(argv[0]) == "conmon"
        ]

    def helper_pids(self) -> list[int]:
        """conmon monitors and exit commands (``berth container cleanup``) of this instance
        (not its long-lived helpers, such as the DNS resolver: see ``service_pids``)."""
        return sorted(
            p for p, argv in processes_with(str(self.root)).items() if not _is_service(argv)
        )

    def service_pids(self, module: str = "engine.") -> list[int]:
        """Long-lived helpers of this instance (``python -m engine.network.dns ...``)."""
        return sorted(
            p
            for p, argv in processes_with(str(self.root)).items()
            if _is_service(argv) and argv[2].startswith(module)
        )

    def use_host_netns(self, netns: str) -> None:
        """Make the instance treat the named network namespace as its host."""
        self.env["BERTH_HOST_NETNS"] = netns

    def endpoints(self) -> list[tuple[str, str, str]]:
        """(network id, container id, ip) of every endpoint row in the state database."""
        db = self.root / "berth.db"
        if not db.exists():
            return []
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return [
                tuple(r) for r in con.execute("SELECT network_id, container_id, ip FROM endpoints")
            ]
        except sqlite3.OperationalError:  # no network was ever used: no table yet
            return []
        finally:
            con.close()

    def wait_quiet(self, timeout: float = 10.0) -> list[int]:
        """Wait until no monitor or exit command of the instance runs; the PIDs still left."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.helper_pids()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.005)

    def cgroup_children(self) -> list[Path]:
        """Container cgroups (``<ctl>/<prefix>/<id>``) still present in any hierarchy."""
        out = []
        for ctl in cgroup_controllers():
            d = ctl / self.prefix
            if d.is_dir():
                out += [c for c in d.iterdir() if c.is_dir()]
        return out

    def netns(self) -> list[str]:
        return (
            sorted(p.name for p in NETNS_DIR.glob(f"{self.prefix}-*")) if NETNS_DIR.is_dir() else []
        )

    def mounts(self) -> list[str]:
        return mounts_under(self.root / "containers", self.run)

    def leftovers(self, *, state: bool = True, processes: bool = True) -> list[str]:
        """Everything containers of this instance left behind; [] when clean."""
        found = [f"mount {m}" for m in self.mounts()]
        found += [f"cgroup {c}" for c in self.cgroup_children()]
        found += [f"netns /run/netns/{n}" for n in self.netns()]
        if processes:
            found += [f"conmon pid {p}" for p in self.conmon_pids()]
        if state:
            found += [f"state row {i}" for i in self.container_ids()]
        return found

    # Teardown
    def teardown(self) -> list[str]:
        """Remove every container, then whatever is still left; returns what needed force."""
        forced = []
        try:
            ids = self.container_ids() if self.root.exists() else []
            for i in range(0, len(ids), 50):
                self.berth("rm", "-f", *ids[i : i + 50], check=False)
        except Exception as e:  # keep going: the kernel objects below matter more
            forced.append(f"berth rm failed: {e}")
        self.wait_quiet(10)
        for pid in self.service_pids():
            forced.append(f"killed helper {pid}")
            _kill(pid)
        # Anything still alive was started by this instance (monitors, containers).
        for pid in self.conmon_pids():
            forced.append(f"killed conmon {pid}")
            _kill(pid)
        for cg in self.cgroup_children():
            procs = cg / "cgroup.procs"
            try:
                pids = [int(x) for x in procs.read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                forced.append(f"killed container process {pid}")
                _kill(pid)
        for m in self.mounts():
            forced.append(f"unmounted {m}")
        umount_all_under(self.root, self.run)
        for name in self.netns():
            forced.append(f"deleted netns {name}")
            try:
                from engine.netns import delete_netns

                delete_netns(name)
            except Exception:
                subprocess.run(
                    ["ip", "netns", "delete", name], stderr=subprocess.DEVNULL, check=False
                )
        self.remove_instance_cgroups()
        shutil.rmtree(self.run, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return forced

    def remove_instance_cgroups(self, timeout: float = 10.0) -> list[Path]:
        """rmdir ``<ctl>/<prefix>`` and ``<ctl>/<prefix>-monitors`` everywhere; those left."""
        deadline = time.monotonic() + timeout
        while True:
            left = [
                d
                for ctl in cgroup_controllers()
                for d in (ctl / self.prefix, ctl / f"{self.prefix}-monitors")
                if not rmdir_cgroup_tree(d)
            ]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)


def _is_service(argv: list[str]) -> bool:
    return len(argv) > 2 and argv[1] == "-m" and argv[2].startswith("engine.")


class HostNetns:
    """A named network namespace (loopback up) that an instance takes as its host
    (``BERTH_HOST_NETNS``): its bridges, veths, nftables and ip_forward land there,
    and deleting the namespace takes them all away."""

    def __init__(self, name: str):
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)

    def links(self, kind: str = "") -> list[str]:
        """Interface names in the namespace (of ``kind``, e.g. "veth", "bridge")."""
        argv = ["ip", "-n", self.name, "-o", "link", "show"] + (["type", kind] if kind else [])
        p = subprocess.run(argv, capture_output=True, text=True, check=True)
        return [line.split(":")[1].strip().split("@")[0] for line in p.stdout.splitlines()]

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, check=False)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_with_cleanup(body: Callable[[], int], cleanups: list[Callable[[], object]]) -> int:
    """Run ``body``; run every clean-up (last registered first) even on Ctrl-C or errors."""
    sigterm_as_interrupt()
    try:
        return body()
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        for fn in reversed(cleanups):
            try:
                fn()
            except Exception as e:
                print(f"clean-up step failed: {e}", file=sys.stderr)
