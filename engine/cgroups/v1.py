"""cgroup v1 driver: one directory per hierarchy (controller mount)."""

from __future__ import annotations

import time
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
from engine.errors import InvalidArgument, InvalidState, Unsupported

# cpuacct.stat counts USER_HZ ticks; the kernel ABI fixes USER_HZ at 100.
_NS_PER_TICK = 10_000_000


def _limit_or_unlimited(v: int | None) -> int | None:
    if v is None:
        return None
    return -1 if v >= _fs.V1_UNLIMITED else v


class V1Cgroup(Cgroup):
    version = "v1"

    def _dir(self, controller: str) -> Path | None:
        mount = self.layout.controllers.get(controller)
        return mount / self.path if mount else None

    def _need(self, controller: str) -> Path:
        d = self._dir(controller)
        if d is None:
            raise Unsupported(f"cgroup v1 controller {controller} is not mounted", obj=self.obj)
        return d

    def dirs(self) -> list[Path]:
        return [m / self.path for m in self.layout.hierarchies()]

    def _procs_dirs(self) -> list[Path]:
        # Controllers only: the named and unified hierarchies list the same tasks.
        seen: list[Path] = []
        for m in self.layout.controllers.values():
            if m / self.path not in seen:
                seen.append(m / self.path)
        return seen

    # -- lifecycle ---------------------------------------------------------------

    def create(self) -> None:
        cpuset_mount = self.layout.controllers.get("cpuset")
        for mount in self.layout.hierarchies():
            d = mount
            for part in self.path.split("/"):
                parent, d = d, d / part
                if not d.is_dir():
                    try:
                        _fs.OPS.mkdir(d)
                    except FileExistsError:
                        pass  # a concurrent creator won
                    except OSError as err:
                        raise _fs.wrap(err, f"mkdir {d}", self.obj) from err
                if mount == cpuset_mount:
                    self._init_cpuset(parent, d)

    def _init_cpuset(self, parent: Path, d: Path) -> None:
        # A new v1 cpuset starts with empty cpus/mems and refuses tasks (ENOSPC)
        # until they are set; inherit the parent's, as runc does.
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not (_fs.read_text(d / name, self.obj) or "").strip():
                value = (_fs.read_text(parent / name, self.obj) or "").strip()
                if value:
                    _fs.write(d / name, value, self.obj)

    # -- limits ------------------------------------------------------------------

    def apply(self, res: Resources) -> None:
        res.validate()
        if res.cpuset_cpus is not None:
            _fs.write(self._need("cpuset") / "cpuset.cpus", res.cpuset_cpus, self.obj)
        if res.memory is not None or res.memory_swap is not None:
            self._apply_memory(res.memory, res.memory_swap)
        if res.memory_reservation is not None:
            mem = self._need("memory")
            _fs.write(mem / "memory.soft_limit_in_bytes", res.memory_reservation, self.obj)
        shares = res.cpu_shares
        if shares is None and res.cpu_weight is not None:
            shares = weight_to_shares(res.cpu_weight)
        if shares is not None:
            _fs.write(self._need("cpu") / "cpu.shares", shares, self.obj)
        if res.cpu_period is not None or res.cpu_quota is not None:
            self._apply_cfs(res.cpu_quota, res.cpu_period)
        if res.pids_limit is not None:
            limit = "max" if res.pids_limit <= 0 else res.pids_limit
            _fs.write(self._need("pids") / "pids.max", limit, self.obj)

    def _apply_memory(self, memory: int | None, swap: int | None) -> None:
        # The kernel insists memory <= memsw at every moment, so the order of
        # the two writes depends on the direction of the change (as in runc).
        mem_dir = self._need("memory")
        limit_file = mem_dir / "memory.limit_in_bytes"
        swap_file = mem_dir / "memory.memsw.limit_in_bytes"
        has_swap = swap_file.exists()
        if memory == -1 and swap is None and has_swap:
            swap = -1  # unlimited memory with a leftover memsw cap would still cap
        if swap is not None and not has_swap:
            if swap == -1:
                swap = None
            else:
                raise Unsupported(
                    "swap limit not supported: swap accounting is off (swapaccount=0)",
                    obj=self.obj,
                )
        if memory is not None and swap is not None:
            cur = _fs.read_int(limit_file, self.obj)
            if swap == -1 or (cur is not None and cur < swap):
                _fs.write(swap_file, swap, self.obj)
                _fs.write(limit_file, memory, self.obj)
                return
        try:
            if memory is not None:
                _fs.write(limit_file, memory, self.obj)
        except InvalidArgument as err:
            raise InvalidArgument(
                f"memory limit {memory} is above the memory+swap limit; set memory_swap too",
                obj=self.obj,
                errno=err.errno,
            ) from err
        if swap is not None:
            _fs.write(swap_file, swap, self.obj)

    def _apply_cfs(self, quota: int | None, period: int | None) -> None:
        cpu = self._need("cpu")
        if period is None:
            _fs.write(cpu / "cpu.cfs_quota_us", quota, self.obj)
            return
        try:
            _fs.write(cpu / "cpu.cfs_period_us", period, self.obj)
        except InvalidArgument:
            # The old quota may not fit the new period (parent bandwidth
            # checks); runc sets the quota first and retries.
            if quota is None:
                raise
            _fs.write(cpu / "cpu.cfs_quota_us", quota, self.obj)
            _fs.write(cpu / "cpu.cfs_period_us", period, self.obj)
            return
        if quota is not None:
            _fs.write(cpu / "cpu.cfs_quota_us", quota, self.obj)

    def limits(self) -> Resources:
        self._require()
        r = Resources()
        if mem := self._dir("memory"):
            r.memory = _limit_or_unlimited(_fs.read_int(mem / "memory.limit_in_bytes", self.obj))
            r.memory_swap = _limit_or_unlimited(
                _fs.read_int(mem / "memory.memsw.limit_in_bytes", self.obj)
            )
            r.memory_reservation = _limit_or_unlimited(
                _fs.read_int(mem / "memory.soft_limit_in_bytes", self.obj)
            )
        if cpu := self._dir("cpu"):
            r.cpu_quota = _fs.read_int(cpu / "cpu.cfs_quota_us", self.obj)
            r.cpu_period = _fs.read_int(cpu / "cpu.cfs_period_us", self.obj)
            r.cpu_shares = _fs.read_int(cpu / "cpu.shares", self.obj)
            if r.cpu_shares is not None:
                r.cpu_weight = shares_to_weight(r.cpu_shares)
        if cs := self._dir("cpuset"):
            text = _fs.read_text(cs / "cpuset.cpus", self.obj)
            r.cpuset_cpus = text.strip() if text is not None else None
        if pids := self._dir("pids"):
            text = _fs.read_text(pids / "pids.max", self.obj)
            if text is not None:
                r.pids_limit = -1 if text.strip() == "max" else int(text)
        return r

    # -- statistics --------------------------------------------------------------

    def stats(self) -> CgroupStats:
        self._require()
        s = CgroupStats()
        if acct := self._dir("cpuacct"):
            s.cpu_usage_ns = _fs.read_int(acct / "cpuacct.usage", self.obj)
            s.cpu_user_ns = _fs.read_int(acct / "cpuacct.usage_user", self.obj)
            s.cpu_system_ns = _fs.read_int(acct / "cpuacct.usage_sys", self.obj)
            if s.cpu_user_ns is None or s.cpu_system_ns is None:
                # Kernels before 4.6 only have tick counts.
                ticks = _fs.read_kv(acct / "cpuacct.stat", self.obj)
                if ticks:
                    s.cpu_user_ns = ticks.get("user", 0) * _NS_PER_TICK
                    s.cpu_system_ns = ticks.get("system", 0) * _NS_PER_TICK
        if cpu := self._dir("cpu"):
            st = _fs.read_kv(cpu / "cpu.stat", self.obj)
            if st:
                s.nr_periods = st.get("nr_periods")
                s.throttled_periods = st.get("nr_throttled")
                s.throttled_time_ns = st.get("throttled_time")
        if mem := self._dir("memory"):
            self._memory_stats(mem, s)
        if pids := self._dir("pids"):
            s.pids_current = _fs.read_int(pids / "pids.current", self.obj)
            s.pids_limit = _fs.read_int(pids / "pids.max", self.obj)
        if blk := self._dir("blkio"):
            s.blkio_read_bytes, s.blkio_write_bytes = self._blkio(blk)
        if self.layout.hybrid and self.layout.unified:
            # PSI lives on the cgroup2 side only; present if we made a dir there.
            u = self.layout.unified / self.path
            s.cpu_pressure = read_pressure(u / "cpu.pressure")
            s.memory_pressure = read_pressure(u / "memory.pressure")
            s.io_pressure = read_pressure(u / "io.pressure")
        return s

    def oom_kills(self) -> int:
        mem = self._dir("memory")
        if mem is None:
            return 0
        return int(_fs.read_kv(mem / "memory.oom_control", self.obj).get("oom_kill") or 0)

    def _memory_stats(self, mem: Path, s: CgroupStats) -> None:
        s.memory_stat = _fs.read_kv(mem / "memory.stat", self.obj)
        usage = _fs.read_int(mem / "memory.usage_in_bytes", self.obj)
        s.memory_raw_usage = usage
        if usage is not None:
            # docker CLI: usage minus total_inactive_file, when that is smaller.
            inactive = s.memory_stat.get("total_inactive_file", 0)
            s.memory_usage = usage - inactive if inactive < usage else usage
        limit = _fs.read_int(mem / "memory.limit_in_bytes", self.obj)
        s.memory_limit = None if limit is None or limit >= _fs.V1_UNLIMITED else limit
        s.memory_max_usage = _fs.read_int(mem / "memory.max_usage_in_bytes", self.obj)
        s.oom_kill_count = _fs.read_kv(mem / "memory.oom_control", self.obj).get("oom_kill")

    def _blkio(self, blk: Path) -> tuple[int | None, int | None]:
        # The throttle file counts every device on blk-mq kernels; the CFQ/BFQ
        # ones only disks with that scheduler. First one present wins.
        for name in (
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.io_service_bytes_recursive",
            "blkio.bfq.io_service_bytes_recursive",
        ):
            text = _fs.read_text(blk / name, self.obj)
            if text is None:
                continue
            read = write = 0
            for line in text.splitlines():
                parts = line.split()
                if len(parts) == 3:
                    op = parts[1].lower()
                    if op == "read":
                        read += int(parts[2])
                    elif op == "write":
                        write += int(parts[2])
            return read, write
        return None, None

    # -- freezer -----------------------------------------------------------------

    def _state_file(self) -> Path:
        return self._need("freezer") / "freezer.state"

    def freeze(self, timeout: float = 5.0) -> None:
        state = self._state_file()
        _fs.write(state, "FROZEN", self.obj)
        if timeout <= 0:
            return
        # A v1 freeze can stall in FREEZING (a task in an uninterruptible
        # sleep); each new write of FROZEN makes the kernel try again.
        if self._freeze_wait(timeout, retry=lambda: _fs.write(state, "FROZEN", self.obj)):
            return
        self.thaw()
        raise InvalidState(f"could not freeze within {timeout:g}s (stuck FREEZING)", obj=self.obj)

    def thaw(self) -> None:
        state = self._state_file()
        _fs.write(state, "THAWED", self.obj)
        # Thawing is immediate in the kernel, but make sure before returning.
        deadline = time.monotonic() + 1.0
        while (_fs.read_text(state, self.obj) or "").strip() != "THAWED":
            if time.monotonic() >= deadline:
                raise InvalidState("freezer did not report THAWED", obj=self.obj)
            time.sleep(0.005)

    def frozen(self) -> bool:
        text = _fs.read_text(self._state_file(), self.obj)
        if text is None:
            raise self._not_found()
        return text.strip() == "FROZEN"
