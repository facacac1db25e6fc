"""cgroup v2 driver: one directory in the unified hierarchy."""

from __future__ import annotations

import signal
from pathlib import Path

from engine.cgroups import _fs
from engine.cgroups.base import (
    Cgroup,
    CgroupStats,
    Resources,
    read_pressure,
    shares_to_weight,
    weight_to_shares,
)
from engine.errors import EngineError, InvalidArgument, InvalidState

# Controllers a container cgroup needs delegated from every ancestor.
_WANTED = ("cpuset", "cpu", "io", "memory", "pids")


def _max_or_int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return -1 if text == "max" else int(text)


class V2Cgroup(Cgroup):
    version = "v2"

    @property
    def dir(self) -> Path:
        assert self.layout.unified is not None
        return self.layout.unified / self.path

    def dirs(self) -> list[Path]:
        return [self.dir]

    def _procs_dirs(self) -> list[Path]:
        return [self.dir]

    # -- lifecycle ---------------------------------------------------------------

    def create(self) -> None:
        assert self.layout.unified is not None
        d = self.layout.unified
        for part in self.path.split("/"):
            # Controller files appear in a child only if every ancestor has the
            # controller in its cgroup.subtree_control; crun does the same walk.
            self._delegate(d)
            d = d / part
            if not d.is_dir():
                try:
                    _fs.OPS.mkdir(d)
                except FileExistsError:
                    pass
                except OSError as err:
                    raise _fs.wrap(err, f"mkdir {d}", self.obj) from err

    def _delegate(self, d: Path) -> None:
        available = set((_fs.read_text(d / "cgroup.controllers", self.obj) or "").split())
        enabled = set((_fs.read_text(d / "cgroup.subtree_control", self.obj) or "").split())
        missing = [c for c in _WANTED if c in available and c not in enabled]
        if not missing:
            return
        try:
            _fs.write(d / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing), self.obj)
        except EngineError:
            # One controller refused (e.g. cpuset/EBUSY, or a parent that holds
            # processes): enable what can be enabled, one at a time.
            for c in missing:
                try:
                    _fs.write(d / "cgroup.subtree_control", f"+{c}", self.obj)
                except EngineError:
                    pass

    # -- limits ------------------------------------------------------------------

    def apply(self, res: Resources) -> None:
        res.validate()
        d = self.dir
        if res.cpuset_cpus is not None:
            _fs.write(d / "cpuset.cpus", res.cpuset_cpus, self.obj)
        if res.memory is not None:
            _fs.write(d / "memory.max", "max" if res.memory == -1 else res.memory, self.obj)
        swap = self._swap_value(res.memory, res.memory_swap)
        if swap is not None:
            _fs.write(d / "memory.swap.max", "max" if swap == -1 else swap, self.obj)
        if res.memory_reservation is not None:
            low = 0 if res.memory_reservation == -1 else res.memory_reservation
            _fs.write(d / "memory.low", low, self.obj)
        weight = res.cpu_weight
        if res.cpu_shares is not None:
            weight = shares_to_weight(res.cpu_shares)
        if weight is not None:
            _fs.write(d / "cpu.weight", weight, self.obj)
        if res.cpu_quota is not None or res.cpu_period is not None:
            cur = (_fs.read_text(d / "cpu.max", self.obj) or "max 100000").split()
            quota = cur[0] if res.cpu_quota is None else res.cpu_quota
            period = cur[1] if res.cpu_period is None else res.cpu_period
            quota = "max" if quota in (-1, "-1") else quota
            _fs.write(d / "cpu.max", f"{quota} {period}", self.obj)
        if res.pids_limit is not None:
            limit = "max" if res.pids_limit <= 0 else res.pids_limit
            _fs.write(d / "pids.max", limit, self.obj)

    def _swap_value(self, memory: int | None, swap: int | None) -> int | None:
        """OCI/docker memory+swap to v2 memory.swap.max (swap alone), as runc and crun do."""
        if swap is None:
            # Unlimited memory without a word on swap means unlimited swap too
            # (what the same request does on v1).
            if memory == -1 and (self.dir / "memory.swap.max").exists():
                return -1
            return None
        if swap == -1:
            return -1
        if memory is None:
            memory = _max_or_int(_fs.read_text(self.dir / "memory.max", self.obj))
        if memory is None or memory == -1:
            raise InvalidArgument("cannot set a swap limit without a memory limit", obj=self.obj)
        if swap < memory:
            raise InvalidArgument("memory+swap limit must be >= the memory limit", obj=self.obj)
        return swap - memory

    def limits(self) -> Resources:
        self._require()
        d = self.dir
        r = Resources()
        r.memory = _max_or_int(_fs.read_text(d / "memory.max", self.obj))
        swap = _max_or_int(_fs.read_text(d / "memory.swap.max", self.obj))
        if swap is not None:
            # Report memory+swap as docker does; unlimited if either side is.
            r.memory_swap = -1 if swap == -1 or r.memory in (None, -1) else r.memory + swap
        low = _max_or_int(_fs.read_text(d / "memory.low", self.obj))
        r.memory_reservation = -1 if low == 0 else low
        r.cpu_weight = _fs.read_int(d / "cpu.weight", self.obj)
        if r.cpu_weight is not None:
            r.cpu_shares = weight_to_shares(r.cpu_weight)
        cpu_max = _fs.read_text(d / "cpu.max", self.obj)
        if cpu_max is not None:
            quota, period = cpu_max.split()
            r.cpu_quota = -1 if quota == "max" else int(quota)
            r.cpu_period = int(period)
        text = _fs.read_text(d / "cpuset.cpus", self.obj)
        r.cpuset_cpus = text.strip() if text is not None else None
        r.pids_limit = _max_or_int(_fs.read_text(d / "pids.max", self.obj))
        return r

    # -- statistics --------------------------------------------------------------

    def oom_kills(self) -> int:
        return int(_fs.read_kv(self.dir / "memory.events", self.obj).get("oom_kill") or 0)

    def stats(self) -> CgroupStats:
        self._require()
        d = self.dir
        s = CgroupStats()
        cpu = _fs.read_kv(d / "cpu.stat", self.obj)
        if cpu:
            # cpu.stat is in microseconds on v2; the API speaks nanoseconds.
            s.cpu_usage_ns = _us_to_ns(cpu.get("usage_usec"))
            s.cpu_user_ns = _us_to_ns(cpu.get("user_usec"))
            s.cpu_system_ns = _us_to_ns(cpu.get("system_usec"))
            s.nr_periods = cpu.get("nr_periods")
            s.throttled_periods = cpu.get("nr_throttled")
            s.throttled_time_ns = _us_to_ns(cpu.get("throttled_usec"))
        s.memory_stat = _fs.read_kv(d / "memory.stat", self.obj)
        usage = _fs.read_int(d / "memory.current", self.obj)
        s.memory_raw_usage = usage
        if usage is not None:
            inactive = s.memory_stat.get("inactive_file", 0)
            s.memory_usage = usage - inactive if inactive < usage else usage
        s.memory_limit = _fs.read_int(d / "memory.max", self.obj)
        s.memory_max_usage = _fs.read_int(d / "memory.peak", self.obj)  # kernel >= 5.19
        events = _fs.read_kv(d / "memory.events", self.obj)
        s.oom_kill_count = events.get("oom_kill")
        s.pids_current = _fs.read_int(d / "pids.current", self.obj)
        s.pids_limit = _fs.read_int(d / "pids.max", self.obj)
        s.blkio_read_bytes, s.blkio_write_bytes = self._io(d)
        s.cpu_pressure = read_pressure(d / "cpu.pressure")
        s.memory_pressure = read_pressure(d / "memory.pressure")
        s.io_pressure = read_pressure(d / "io.pressure")
        return s

    def _io(self, d: Path) -> tuple[int | None, int | None]:
        text = _fs.read_text(d / "io.stat", self.obj)
        if text is None:
            return None, None
        read = write = 0
        for line in text.splitlines():
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key == "rbytes":
                    read += int(value)
                elif key == "wbytes":
                    write += int(value)
        return read, write

    # -- freezer and kill ----------------------------------------------------------

    def freeze(self, timeout: float = 5.0) -> None:
        _fs.write(self.dir / "cgroup.freeze", 1, self.obj)
        if timeout <= 0 or self._freeze_wait(timeout):
            return
        self.thaw()
        raise InvalidState(f"could not freeze within {timeout:g}s", obj=self.obj)

    def thaw(self) -> None:
        _fs.write(self.dir / "cgroup.freeze", 0, self.obj)

    def frozen(self) -> bool:
        # cgroup.freeze is the request; cgroup.events "frozen" is the kernel's
        # answer once every task has stopped.
        events = _fs.read_kv(self.dir / "cgroup.events", self.obj)
        if "frozen" in events:
            return events["frozen"] == 1
        value = _fs.read_int(self.dir / "cgroup.freeze", self.obj)
        if value is None:
            raise self._not_found()
        return value == 1

    def kill_all(self, sig: int = signal.SIGKILL) -> int:
        # cgroup.kill (kernel >= 5.14) kills the whole subtree atomically, no
        # freeze dance and no race with fork.
        kill_file = self.dir / "cgroup.kill"
        if sig == signal.SIGKILL and kill_file.exists():
            count = len(self.procs())
            _fs.write(kill_file, 1, self.obj)
            return count
        return super().kill_all(sig)


def _us_to_ns(v: int | None) -> int | None:
    return None if v is None else v * 1000
