"""``docker update``: change a container's limits and restart policy, live and on record.

The new limits are written straight to the container's cgroup with the
engine's own driver rather than through ``runc update`` / ``crun update``:
the two runtimes disagree on details (crun refuses this host's hybrid layout
outright, runc's v1 update rewrites every controller from its own state), and
the driver already orders the v1 memory/memsw writes safely. The values are
then stored in the record's options, so ``inspect`` shows them and the next
start (``build_bundle``) puts the same limits into config.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.cgroups import Resources, detect, online_cpus, open_cgroup
from engine.containers import records
from engine.containers.options import RestartPolicy, parse_restart
from engine.containers.records import Container, Paths
from engine.errors import InvalidArgument
from engine.locks import file_lock
from engine.runtime.oci import pid_alive

MIN_MEMORY = 6 * 1024 * 1024  # docker's floor for -m
CFS_PERIOD = 100_000  # us; what --cpus uses at create time (build_bundle)


@dataclass
class UpdateOptions:
    """What to change; None leaves a setting as it is.

    memory, memory_swap: bytes, -1 for unlimited (memory_swap is memory plus
    swap, as ``--memory-swap``). cpus: 0 removes the CPU limit. pids_limit:
    0 or -1 removes the limit. restart: a RestartPolicy or its text form.
    """

    memory: int | None = None
    memory_swap: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    restart: RestartPolicy | str | None = None

    def empty(self) -> bool:
        return all(
            v is None
            for v in (self.memory, self.memory_swap, self.cpus, self.pids_limit, self.restart)
        )


def _memsw_available(cg) -> bool:
    """Swap accounting for this cgroup: v1 memsw files exist only with swapaccount=1."""
    return any(
        (d / "memory.memsw.limit_in_bytes").exists() or (d / "memory.swap.max").exists()
        for d in cg.dirs()
    )


def _plan_memory(c: Container, u: UpdateOptions) -> tuple[int | None, int | None, bool]:
    """New (memory, memory_swap) for the record, and whether swap was derived.

    Docker's rules: a swap limit needs a memory limit; an explicit swap limit
    below the new memory is a conflict; without any word on swap the default
    "as much swap as memory" (2 x memory) follows the new memory, exactly what
    ``build_bundle`` does at start when ``memory_swap`` is None.
    """
    mem, swap = c.opts.memory, c.opts.memory_swap
    derived = False
    if u.memory is not None:
        if u.memory != -1 and u.memory < MIN_MEMORY:
            raise InvalidArgument("minimum memory limit allowed is 6MB", obj=c.name)
        mem = None if u.memory == -1 else u.memory
    if u.memory_swap is not None:
        if u.memory_swap not in (-1,) and u.memory_swap <= 0:
            raise InvalidArgument(
                f"invalid memory-swap {u.memory_swap}: bytes > 0 or -1", obj=c.name
            )
        swap = u.memory_swap
    if mem is None:
        if swap not in (None, -1):
            raise InvalidArgument(
                "you should always set the memory limit when using memoryswap limit", obj=c.name
            )
        swap = None if u.memory == -1 else swap
    elif swap is None:
        derived = True
    elif swap != -1 and swap < mem:
        if u.memory_swap is not None:
            msg = "Minimum memoryswap limit should be larger than memory limit, see usage"
        else:
            msg = (
                "Memory limit should be smaller than already set memoryswap limit, "
                "update the memoryswap at the same time"
            )
        raise InvalidArgument(msg, obj=c.name)
    return mem, swap, derived


def _resources(c: Container, u: UpdateOptions, mem, swap, derived: bool, cg) -> Resources:
    res = Resources()
    if u.memory is not None or u.memory_swap is not None:
        res.memory = -1 if mem is None else mem
        if derived:
            if _memsw_available(cg):
                res.memory_swap = 2 * mem
        elif swap is not None:
            res.memory_swap = swap
        elif mem is None and _memsw_available(cg):
            res.memory_swap = -1
    if u.cpus is not None:
        res.cpu_period = CFS_PERIOD
        res.cpu_quota = -1 if u.cpus == 0 else int(u.cpus * CFS_PERIOD)
    if u.pids_limit is not None:
        res.pids_limit = -1 if u.pids_limit <= 0 else u.pids_limit
    return res


def _validate(c: Container, u: UpdateOptions) -> RestartPolicy | None:
    if u.empty():
        raise InvalidArgument("you must provide one or more flags when using this command")
    if u.cpus is not None:
        n = online_cpus()
        if u.cpus < 0 or u.cpus > n or (0 < u.cpus < 0.01):
            raise InvalidArgument(
                f"range of CPUs is from 0.01 to {n:.2f}, as there are only {n} CPUs available",
                obj=c.name,
            )
    pol = None
    if u.restart is not None:
        pol = parse_restart(u.restart) if isinstance(u.restart, str) else u.restart
        if c.opts.auto_remove and pol.name != "no":
            raise InvalidArgument(
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
                obj=c.name,
            )
    return pol


def update(eng, ref: str, u: UpdateOptions) -> Container:
    """Apply ``u`` to the running cgroup (if any) and store it; returns the new record."""
    c = eng.get_container(ref)
    with file_lock(Paths(eng.config, c.id).lock):
        c = records.load(eng.db, c.id)  # under the lock: a concurrent start/update is done
        pol = _validate(c, u)
        mem, swap, derived = _plan_memory(c, u)
        if c.state in records.ACTIVE and pid_alive(c.pid):
            cg = open_cgroup(detect(), f"{eng.config.prefix}/{c.id}")
            res = _resources(c, u, mem, swap, derived, cg)
            if res != Resources():
                cg.apply(res)  # raises before anything is recorded if the kernel refuses
        if u.memory is not None or u.memory_swap is not None:
            c.opts.memory, c.opts.memory_swap = mem, None if derived else swap
        if u.cpus is not None:
            c.opts.cpus = u.cpus or None
        if u.pids_limit is not None:
            c.opts.pids_limit = u.pids_limit if u.pids_limit > 0 else None
        if pol is not None:
            c.opts.restart = pol
        records.update(eng.db, c.id, config=c.config_json())
    eng.emit("container", "update", c.id, name=c.name, image=c.image_ref)
    return c
