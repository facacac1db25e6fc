"""`berth system boot`: bring an engine instance back after a host restart or a
restart of Berth's own services (DESIGN.md, "Long-lived helpers").

The kernel's boot id (/proc/sys/kernel/random/boot_id) is kept in state (kv
``boot_id``, and on every container row at start). When it changed, the host
rebooted: every process, mount, network namespace and cgroup of the previous
boot is gone, and the pids in the rows may now belong to unrelated processes,
so a "running" row is stale whatever ``kill(pid, 0)`` says. Such rows are
marked exited with code 255 (what Docker shows for containers that died with
the daemon or the host), leftovers are removed, and the restart policies are
applied as Docker applies them when its daemon starts:

- ``always``: started, even if the user had stopped it (Docker's documented
  exception: a manually stopped ``always`` container comes back on daemon start);
- ``unless-stopped``: started unless the user had stopped it;
- ``on-failure``: started if it last exited non-zero (which a container that
  was running at the reboot did: 255), within its retry limit, and was not
  stopped by the user.

When the boot id is the same (Berth's services restarted, not the host), the
rows are reconciled with the kernel (a dead pid gets the usual exit handling,
restart policy included), restarts that were interrupted are done, and the
helpers that should run are restarted.
"""

from __future__ import annotations

import time

from engine import helpers
from engine.containers import lifecycle, records
from engine.containers.records import Container, Paths
from engine.errors import EngineError
from engine.locks import file_lock
from engine.runtime.oci import pid_alive

STALE_EXIT_CODE = 255
BOOT_KV = "boot_id"


def boot(eng) -> dict:
    """Reconcile state with the kernel; returns a report:
    ``{reboot, boot_id, previous_boot_id, stale, started, failed, reconciled,
    removed, helpers}`` (lists of container names, helper names)."""
    report: dict = {
        "reboot": False,
        "boot_id": helpers.current_boot_id(),
        "previous_boot_id": "",
        "stale": [],
        "started": [],
        "failed": [],
        "reconciled": [],
        "removed": [],
        "helpers": [],
    }
    # One boot at a time: two concurrent ones would both start the same containers.
    with file_lock(eng.config.locks_dir / "boot.lock", timeout=300):
        current = report["boot_id"]
        stored = eng.db.get_kv(BOOT_KV)
        report["previous_boot_id"] = stored
        report["reboot"] = bool(stored) and stored != current
        helpers.prune_stale(eng)

        restart: list[Container] = []
        for c in records.load_all(eng.db):
            if c.state == "removing":
                _finish_removal(eng, c, report)
            elif c.state in records.ACTIVE:
                # A row stamped during another boot is stale even if the kv was never
                # written (first `system boot` after an upgrade).
                if report["reboot"] or (c.boot_id and c.boot_id != current):
                    c2 = _mark_stale(eng, c)
                    if c2 is not None:
                        report["stale"].append(c.name)
                        if _should_restart(c2):
                            restart.append(c2)
                elif not pid_alive(c.pid):
                    eng.get_container(c.id)  # the usual exit handling, restart policy included
                    report["reconciled"].append(c.name)
            elif c.state == "exited" and _should_restart(c):
                # After a reboot: e.g. an `always` container the user had stopped.
                # Same boot: a restart its exit command never finished (killed in
                # the back-off sleep); if it is still sleeping, it finds the
                # container running and does nothing.
                if report["reboot"] or not c.user_stopped:
                    restart.append(c)

        for c in restart:
            try:
                eng.start_container(c.id)
                report["started"].append(c.name)
            except EngineError as e:
                report["failed"].append({"name": c.name, "error": str(e)})

        report["helpers"] = _ensure_helpers(eng)
        eng.db.set_kv(BOOT_KV, current)
    eng.emit(
        "system",
        "boot",
        "",
        reboot=str(report["reboot"]).lower(),
        started=str(len(report["started"])),
        stale=str(len(report["stale"])),
    )
    return report


def _should_restart(c: Container) -> bool:
    """Docker's RestartManager.ShouldRestart as applied at daemon start."""
    pol = c.opts.restart
    if not c.started_at:
        return False  # never started: Docker only restores containers that ran
    if pol.name == "always":
        return True
    if pol.name == "unless-stopped":
        return not c.user_stopped
    if pol.name == "on-failure":
        if c.user_stopped or c.exit_code == 0:
            return False
        return not pol.max_retries or c.restart_count < pol.max_retries
    return False


def _mark_stale(eng, c: Container) -> Container | None:
    """Record the exit of a container whose process died with the previous boot
    and remove what is left of it; None if someone else handled it meanwhile."""
    p = Paths(eng.config, c.id)
    with file_lock(p.lock):
        try:
            c = records.load(eng.db, c.id)
        except EngineError:
            return None
        if c.state not in records.ACTIVE:
            return None
        try:
            lifecycle.teardown(eng, c)  # after a real reboot there is little or nothing left
        except EngineError:
            pass  # best effort: the next start tears down again before it mounts
        c.state, c.exit_code, c.finished_at = "exited", STALE_EXIT_CODE, time.time()
        records.update(
            eng.db,
            c.id,
            state="exited",
            exit_code=STALE_EXIT_CODE,
            finished_at=c.finished_at,
            pid=0,
            conmon_pid=0,
        )
    eng.emit(
        "container", "die", c.id, name=c.name, image=c.image_ref, exitCode=str(STALE_EXIT_CODE)
    )
    if c.opts.auto_remove and not _should_restart(c):
        # --rm containers go, as their exit command would have removed them.
        try:
            eng.remove_container(c.id, force=True, volumes=True)
        except EngineError:
            pass
        return None
    return c


def _finish_removal(eng, c: Container, report: dict) -> None:
    """A `rm` interrupted between 'removing' and deleting the row: finish it."""
    try:
        eng.remove_container(c.id, force=True)
        report["removed"].append(c.name)
    except EngineError:
        pass


def _ensure_helpers(eng) -> list[str]:
    """Start the helpers that should run now; their names."""
    from engine.containers import health

    out = []
    if health.needed(eng):
        health.ensure_runner(eng)
        out.append(health.NAME)
    from engine.containers import logkeeper

    if logkeeper.needed(eng):
        logkeeper.ensure_keeper(eng)
        out.append(logkeeper.NAME)
    from engine.network import resolver, store

    if store.all_networks(eng.db) and any(n.driver == "bridge" for n in store.all_networks(eng.db)):
        # After a reboot the kernel forgot our bridges' rules; rebuild the table.
        try:
            eng.sync_firewall()
        except EngineError:
            pass
        # A port keeper that died let go of the host ports: reserve them again.
        from engine.containers import records
        from engine.network import ports

        for c in records.load_all(eng.db):
            if c.state in records.ACTIVE and c.extra.get("ports") and c.extra.get("port_target"):
                res = [ports.Reserved.from_dict(d) for d in c.extra["ports"]]
                try:
                    ports.rehold(eng, c.id, res, eng.config.host_netns)
                except EngineError:
                    pass
    if resolver.needed(eng) and resolver.ensure_resolver(eng):
        out.append(resolver.NAME)
    return out
