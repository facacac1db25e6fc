"""ContainersAPI: the container half of the engine facade (see engine/api.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from engine.containers import lifecycle, records
from engine.containers.options import CreateOptions, validate_name
from engine.containers.records import Container, Paths
from engine.errors import Conflict, InvalidArgument, InvalidState
from engine.locks import file_lock
from engine.runtime.oci import pid_alive


class ContainersAPI:
    # -- lookups -------------------------------------------------------------------
    def get_container(self, ref: str) -> Container:
        """Load and reconcile with the kernel: a dead process gets its exit handled."""
        c = records.load(self.db, ref)
        if c.state in records.ACTIVE and not pid_alive(c.pid):
            lifecycle.cleanup(self, c.id)
            c = records.load(self.db, c.id)
        return c

    def reconcile_container(self, cid: str) -> None:
        self.get_container(cid)

    def container_records(self) -> list[Container]:
        """Every container as recorded, without looking at the kernel (no pid checks, no
        clean-up of exits nobody handled yet): cheap enough for a page of 200 rows."""
        return records.load_all(self.db)

    def containers(self, all: bool = False, filters: list[str] | None = None) -> list[Container]:
        out = []
        for c in records.load_all(self.db):
            if c.state in records.ACTIVE and not pid_alive(c.pid):
                lifecycle.cleanup(self, c.id)
                try:
                    c = records.load(self.db, c.id)
                except Exception:
                    continue
            if not all and c.state not in records.ACTIVE and not filters:
                continue
            if filters and not _match(c, filters, all):
                continue
            out.append(c)
        return out

    def list_containers(self, all: bool = False, filters: list[str] | None = None) -> list[dict]:
        from engine.containers.inspect import ps_row

        return [ps_row(c) for c in self.containers(all, filters)]

    def inspect_container(self, ref: str) -> dict:
        from engine.containers.inspect import inspect

        return inspect(self, self.get_container(ref))

    def containers_using_image(self, image_id: str) -> list[str]:
        rows = self.db.query("SELECT name FROM containers WHERE image_id=?", (image_id,))
        return [r["name"] for r in rows]

    def image_users_detail(self, image_id: str) -> list[tuple[str, bool]]:
        """(container ID, has a live process) of the containers using the image."""
        rows = self.db.query("SELECT id, state FROM containers WHERE image_id=?", (image_id,))
        return [(r["id"], r["state"] in ("running", "paused", "restarting")) for r in rows]

    def containers_using_volume(self, name: str) -> list[str]:
        users = []
        for c in records.load_all(self.db):
            names = {m.source for m in c.opts.mounts if m.type == "volume"}
            names |= set((c.extra.get("anon_volumes") or {}).values())
            if name in names:
                users.append(c.name)
        return users

    # -- lifecycle -----------------------------------------------------------------
    def create_container(self, opts: CreateOptions) -> Container:
        from engine.containers import create

        c = create.resolve(self, opts)
        create.insert(self, c)
        from engine.containers.lifecycle import _publishes

        if _publishes(c):
            try:
                self.join_primary_network(c)  # eth0 and its address (a taken --ip fails here)
            except BaseException:
                from engine.containers import remove

                remove.remove(self, c.id, force=True)
                raise
        self.emit("container", "create", c.id, name=c.name, image=c.image_ref)
        return c

    def start_container(self, ref: str, attach=None) -> object:
        c = self.get_container(ref)
        if c.state == "paused":
            raise InvalidState(f"cannot start a paused container {c.name}, try unpause instead")
        # A manual start resets the policy's count and back-off (Docker's ResetRestartManager).
        records.update(self.db, c.id, user_stopped=False, restart_count=0)
        return lifecycle.start(self, c, attach=attach)

    def stop_container(self, ref: str, timeout: float | None = None) -> None:
        lifecycle.stop(self, self.get_container(ref), timeout)

    def kill_container(self, ref: str, signal: str = "KILL") -> None:
        lifecycle.kill(self, self.get_container(ref), signal)

    def restart_container(self, ref: str, timeout: float | None = None) -> None:
        c = self.get_container(ref)
        # Docker turns --rm off for a manual restart: the exit must not remove it.
        lifecycle._persist_extra(self, c, manual_restart=True)
        lifecycle.stop(self, c, timeout)
        self.start_container(c.id)
        self.emit("container", "restart", c.id, name=c.name)

    def pause_container(self, ref: str) -> None:
        c = self.get_container(ref)
        if c.state != "running":
            raise InvalidState(f"container {c.name} is not running")
        lifecycle._runtime(self, c).pause(c.id)
        records.update(self.db, c.id, state="paused")
        self.emit("container", "pause", c.id, name=c.name)

    def unpause_container(self, ref: str) -> None:
        c = self.get_container(ref)
        if c.state != "paused":
            raise InvalidState(f"container {c.name} is not paused")
        lifecycle._runtime(self, c).resume(c.id)
        records.update(self.db, c.id, state="running")
        self.emit("container", "unpause", c.id, name=c.name)

    def remove_container(self, ref: str, force: bool = False, volumes: bool = False) -> str:
        from engine.containers import remove

        return remove.remove(self, ref, force=force, volumes=volumes)

    def cleanup_container(self, cid: str) -> None:
        """conmon's exit command lands here: the only caller that applies --rm and restarts."""
        lifecycle.cleanup(self, cid, from_monitor=True)

    def wait_container(self, ref: str) -> int:
        """The exit code of the run that is going on now (or the last one), like
        `docker wait`: a restart policy starting the next run does not prolong it,
        and an --rm container that is gone still reports its code (from its die event)."""
        from engine.errors import NotFound
        from engine.events import last_seq, since

        c = self.get_container(ref)
        if c.state not in records.ACTIVE:
            return c.exit_code
        seq = last_seq(self.db)
        lifecycle.wait_pid_exit(c.pid, None)
        try:
            self.get_container(c.id)  # records the exit if nobody has yet
        except NotFound:
            pass
        for _ in range(500):
            for ev in since(self.db, after_seq=seq):
                if ev.type == "container" and ev.id == c.id and ev.action == "die":
                    return int(ev.attrs.get("exitCode", 0))
            import time

            time.sleep(0.01)
        return self.get_container(c.id).exit_code

    def rename_container(self, ref: str, new_name: str) -> None:
        import sqlite3

        c = self.get_container(ref)
        new_name = validate_name(new_name)
        try:
            records.update(self.db, c.id, name=new_name)
        except sqlite3.IntegrityError:
            raise Conflict(f'the container name "/{new_name}" is already in use') from None
        self.emit("container", "rename", c.id, name=new_name, oldName=c.name)

    def prune_containers(self) -> dict:
        deleted = []
        for c in self.containers(all=True):
            if c.state in ("exited", "created"):
                self.remove_container(c.id)
                deleted.append(c.id)
        self.emit("container", "prune", "", count=str(len(deleted)))
        return {"ContainersDeleted": deleted, "SpaceReclaimed": 0}

    # -- logs ----------------------------------------------------------------------
    def container_logs(
        self,
        ref: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: float = 0,
        until: float = 0,
    ) -> Iterator:
        from engine.containers import logs

        c = self.get_container(ref)
        p = Paths(self.config, c.id)
        if not follow:
            return iter(logs.read(p.log, tail=tail, since=since, until=until))

        def running() -> bool:
            try:
                cur = records.load(self.db, c.id)
            except Exception:
                return False
            return cur.state in records.ACTIVE and pid_alive(cur.pid)

        return logs.follow(p.log, tail=tail, since=since, until=until, running=running)

    def container_lock(self, cid: str):
        return file_lock(Paths(self.config, cid).lock)


def _match(c: Container, filters: list[str], all: bool) -> bool:
    from engine.containers.inspect import docker_state

    by: dict[str, list[str]] = {}
    for f in filters:
        k, eq, v = f.partition("=")
        if not eq:
            raise InvalidArgument(f"bad format of filter (expected name=value): {f}")
        by.setdefault(k, []).append(v)
    for k, vals in by.items():
        if k == "status":
            if docker_state(c) not in vals:
                return False
        elif k == "name":
            if not any(re.search(v, c.name) for v in vals):
                return False
        elif k == "id":
            if not any(c.id.startswith(v) for v in vals):
                return False
        elif k == "label":
            for v in vals:
                lk, eq, lv = v.partition("=")
                if lk not in c.opts.labels or (eq and c.opts.labels[lk] != lv):
                    return False
        elif k == "ancestor":
            if not any(
                v in (c.image_ref, c.image_id, c.image_id.removeprefix("sha256:")[:12])
                for v in vals
            ):
                return False
        elif k == "exited":
            if c.state != "exited" or str(c.exit_code) not in vals:
                return False
        else:
            raise InvalidArgument(f"invalid filter '{k}'")
    if not all and "status" not in by and c.state not in records.ACTIVE:
        return False
    return True
