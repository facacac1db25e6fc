"""The cgroup driver interface, its value types, and the logic both drivers share."""

from __future__ import annotations

import errno
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from engine.cgroups import _fs
from engine.cgroups.detect import CgroupLayout
from engine.errors import Conflict, EngineError, InvalidArgument, NotFound


@dataclass
class Resources:
    """Limits to set (``apply``) or read back (``limits``). None means leave / unknown.

    Units and conventions follow ``docker update``: bytes, microseconds,
    -1 for "unlimited". ``memory_swap`` is memory plus swap, as in
    ``--memory-swap`` and OCI ``linux.resources.memory.swap``.
    """

    memory: int | None = None
    memory_swap: int | None = None
    memory_reservation: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpu_shares: int | None = None  # v1 scale 2..262144 (converted on v2)
    cpu_weight: int | None = None  # v2 scale 1..10000; used only when cpu_shares is None
    cpuset_cpus: str | None = None
    pids_limit: int | None = None  # 0 or -1 means unlimited

    def validate(self) -> None:
        """Reject values no kernel accepts, with a message naming the option."""

        def check(name: str, ok: bool, rule: str) -> None:
            if not ok:
                raise InvalidArgument(f"invalid {name} {getattr(self, name)!r}: {rule}", obj=name)

        for name in ("memory", "memory_swap", "memory_reservation"):
            v = getattr(self, name)
            check(name, v is None or v == -1 or v > 0, "bytes > 0, or -1 for unlimited")
        q, p = self.cpu_quota, self.cpu_period
        check("cpu_quota", q is None or q == -1 or q >= 1000, ">= 1000 us, or -1")
        check("cpu_period", p is None or 1000 <= p <= 1_000_000, "1000..1000000 us")
        s, w = self.cpu_shares, self.cpu_weight
        check("cpu_shares", s is None or 2 <= s <= 262144, "2..262144")
        check("cpu_weight", w is None or 1 <= w <= 10000, "1..10000")
        if self.memory not in (None, -1) and self.memory_swap not in (None, -1):
            check("memory_swap", self.memory_swap >= self.memory, "must be >= memory")


@dataclass
class CgroupStats:
    """One reading of a cgroup's counters; None where the host does not provide one.

    ``memory_usage`` already excludes inactive file pages, as ``docker stats``
    shows it; ``memory_raw_usage`` is the kernel's own figure.
    """

    cpu_usage_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    nr_periods: int | None = None
    throttled_periods: int | None = None
    throttled_time_ns: int | None = None
    memory_usage: int | None = None
    memory_raw_usage: int | None = None
    memory_limit: int | None = None
    memory_max_usage: int | None = None
    oom_kill_count: int | None = None
    pids_current: int | None = None
    pids_limit: int | None = None
    blkio_read_bytes: int | None = None
    blkio_write_bytes: int | None = None
    cpu_pressure: float | None = None  # "some avg10", percent
    memory_pressure: float | None = None
    io_pressure: float | None = None
    memory_stat: dict[str, int] = field(default_factory=dict)


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), the linear map crun 1.8 and runc use."""
    if shares <= 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def weight_to_shares(weight: int) -> int:
    """Inverse of ``shares_to_weight`` (lossy: weights are coarser than shares)."""
    if weight <= 0:
        return 0
    return 2 + -((weight - 1) * -262142 // 9999)  # ceiling, so the round trip holds


def read_pressure(path: Path) -> float | None:
    """``some avg10`` from a PSI file, or None when PSI is off or the file is absent."""
    try:
        text = _fs.read_text(path)
    except EngineError:
        # Reading PSI fails with EOPNOTSUPP when the kernel has psi=0.
        return None
    for line in (text or "").splitlines():
        if line.startswith("some "):
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key == "avg10":
                    return float(value)
    return None


class Cgroup(ABC):
    """One cgroup path (e.g. ``berth/abc123``) across the layout's hierarchies.

    The OCI runtime creates a container's cgroup itself from config.json; the
    engine uses this to change limits, read statistics, pause, kill what is
    left and clean up.
    """

    version: ClassVar[str]

    def __init__(self, layout: CgroupLayout, path: str) -> None:
        rel = path.strip("/")
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts):
            raise InvalidArgument(f"invalid cgroup path {path!r}", obj=path)
        self.layout = layout
        self.path = rel
        self.obj = f"cgroup /{rel}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def _not_found(self) -> NotFound:
        return NotFound("cgroup does not exist", obj=self.obj)

    @abstractmethod
    def dirs(self) -> list[Path]:
        """This cgroup's directory in every hierarchy it lives in."""

    @abstractmethod
    def create(self) -> None:
        """Make the cgroup (and its parents) everywhere; fine if it exists."""

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs())

    def _require(self) -> None:
        if not self.exists():
            raise self._not_found()

    @abstractmethod
    def apply(self, res: Resources) -> None:
        """Set every limit that is not None."""

    @abstractmethod
    def limits(self) -> Resources:
        """The configured limits, -1 where unlimited, None where not available."""

    @abstractmethod
    def stats(self) -> CgroupStats: ...

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in this cgroup (0 if unknown).

        The exit path needs only this; the full stats() reads a dozen files."""
        return int(self.stats().oom_kill_count or 0)

    @abstractmethod
    def freeze(self, timeout: float = 5.0) -> None:
        """Freeze every process; wait until the kernel says frozen (timeout 0: don't wait)."""

    @abstractmethod
    def thaw(self) -> None: ...

    @abstractmethod
    def frozen(self) -> bool: ...

    @abstractmethod
    def _procs_dirs(self) -> list[Path]:
        """Dirs whose cgroup.procs together list the members."""

    def procs(self, recursive: bool = True) -> list[int]:
        """PIDs in this cgroup (and, by default, in its descendants)."""
        pids: set[int] = set()
        for top in self._procs_dirs():
            subtree = _fs.subdirs_bottom_up(top) if recursive else [top]
            for d in subtree:
                pids.update(_fs.read_pids(d / "cgroup.procs", self.obj))
        return sorted(pids)

    def move_pid(self, pid: int) -> None:
        """Put a process (all its threads) into this cgroup in every hierarchy."""
        for d in self.dirs():
            if d.is_dir():
                _fs.write(d / "cgroup.procs", pid, self.obj)

    def kill_all(self, sig: int = signal.SIGKILL) -> int:
        """Signal every member; return how many were signalled.

        For SIGKILL the cgroup is frozen first so nothing forks past the
        snapshot of PIDs, then thawed so the frozen victims can die.
        """
        was_frozen = self._frozen_or_false()
        hold = sig == signal.SIGKILL and not was_frozen
        if hold:
            self._try_freeze()
        count = 0
        try:
            for pid in self.procs():
                try:
                    os.kill(pid, sig)
                    count += 1
                except ProcessLookupError:
                    pass
        finally:
            if hold or (sig == signal.SIGKILL and was_frozen):
                self._try_thaw()
        return count

    def _frozen_or_false(self) -> bool:
        try:
            return self.frozen()
        except EngineError:
            return False

    def _try_freeze(self) -> None:
        try:
            self.freeze(timeout=0.5)
        except EngineError:
            pass  # no freezer or stuck freezing: signal anyway

    def _try_thaw(self) -> None:
        try:
            self.thaw()
        except EngineError:
            pass

    def remove(self, timeout: float = 2.0) -> None:
        """rmdir the cgroup and its descendants in every hierarchy, deepest first.

        Already gone is fine. EBUSY (processes still exiting) is retried until
        ``timeout``, then raised as Conflict naming the PIDs left.
        """
        deadline = time.monotonic() + timeout
        for top in self.dirs():
            for d in _fs.subdirs_bottom_up(top):
                self._rmdir_retry(d, deadline)

    def _rmdir_retry(self, d: Path, deadline: float) -> None:
        delay = 0.01
        while True:
            try:
                _fs.OPS.rmdir(d)
                return
            except FileNotFoundError:
                return
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() >= deadline:
                    if err.errno == errno.EBUSY:
                        left = _fs.read_pids(d / "cgroup.procs", self.obj)
                        raise Conflict(
                            f"cannot remove {d}: still busy (processes {left or 'exiting'})",
                            obj=self.obj,
                            errno=err.errno,
                        ) from err
                    raise _fs.wrap(err, f"rmdir {d}", self.obj) from err
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def _freeze_wait(self, timeout: float, retry: Callable[[], None] | None = None) -> bool:
        """Poll ``frozen()`` until true or timeout; ``retry`` re-kicks a stuck freeze."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            if self.frozen():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            if retry is not None:
                retry()
