"""A thin wrapper over the OCI runtime's command line (crun or runc).

Each engine instance keeps the runtime's state under its own run directory
(``--root``), so instances never see each other's containers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError, HostNotReady, InvalidArgument, NotFound


@dataclass(frozen=True)
class OCIRuntime:
    name: str  # crun | runc
    path: str
    state_root: Path

    def _run(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        cmd = [self.path, f"--root={self.state_root}", *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            msg = (p.stderr or p.stdout).strip().splitlines()
            raise EngineError(f"{self.name} {args[0]} failed: {msg[-1] if msg else p.returncode}")
        return p

    def start(self, cid: str) -> None:
        self._run("start", cid)

    def kill(self, cid: str, sig: int | str, all_procs: bool = False) -> bool:
        """Send a signal; False when the container is already gone/stopped."""
        args = ["kill"] + (["--all"] if all_procs else []) + [cid, str(sig)]
        p = self._run(*args, check=False)
        return p.returncode == 0

    def delete(self, cid: str, force: bool = True) -> None:
        p = self._run("delete", *(["--force"] if force else []), cid, check=False)
        if p.returncode != 0 and "does not exist" not in p.stderr and "not exist" not in p.stderr:
            if self.state(cid) is not None:
                raise EngineError(f"{self.name} delete {cid[:12]} failed: {p.stderr.strip()}")

    def state(self, cid: str) -> dict | None:
        p = self._run("state", cid, check=False)
        if p.returncode != 0:
            return None
        try:
            return json.loads(p.stdout)
        except ValueError:
            return None

    def pause(self, cid: str) -> None:
        self._run("pause", cid)

    def resume(self, cid: str) -> None:
        self._run("resume", cid)

    def update(self, cid: str, resources: dict) -> None:
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(resources, f)
            f.flush()
            self._run("update", f"--resources={f.name}", cid)

    def version(self) -> str:
        p = subprocess.run([self.path, "--version"], capture_output=True, text=True)
        return (p.stdout.splitlines() or [""])[0]


def _hugetlb_blocks_crun() -> bool:
    """crun refuses hybrid cgroups while the unified mount lists a controller (DESIGN.md)."""
    try:
        text = Path("/sys/fs/cgroup/unified/cgroup.controllers").read_text().strip()
    except OSError:
        return False
    return bool(text)


def select_runtime(preferred: str, run_dir: Path) -> OCIRuntime:
    """crun where the host allows it, else runc; an explicit choice must exist."""
    if preferred:
        if preferred not in ("crun", "runc"):
            raise InvalidArgument(f"unknown runtime {preferred!r}: use crun or runc")
        path = shutil.which(preferred)
        if not path:
            raise NotFound(f"runtime {preferred} is not installed (apt-get install {preferred})")
        if preferred == "crun" and _hugetlb_blocks_crun():
            raise HostNotReady(
                "crun cannot run on this host's hybrid cgroup layout while "
                "/sys/fs/cgroup/unified lists a controller; run `berth system check --fix` "
                "or use --runtime runc"
            )
        return OCIRuntime(preferred, path, run_dir / "runtime" / preferred)
    crun = shutil.which("crun")
    if crun and not _hugetlb_blocks_crun():
        return OCIRuntime("crun", crun, run_dir / "runtime" / "crun")
    runc = shutil.which("runc")
    if runc:
        return OCIRuntime("runc", runc, run_dir / "runtime" / "runc")
    if crun:
        raise HostNotReady("crun is blocked by the hybrid cgroup layout and runc is not installed")
    raise HostNotReady("no OCI runtime: apt-get install crun runc")


def runtime_by_name(name: str, run_dir: Path) -> OCIRuntime:
    path = shutil.which(name) or f"/usr/bin/{name}"
    return OCIRuntime(name, path, run_dir / "runtime" / name)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
