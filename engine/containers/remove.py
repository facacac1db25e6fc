"""`rm`: remove a container, its directories and (with -v) its anonymous volumes."""

from __future__ import annotations

import shutil

from engine.containers import lifecycle, records
from engine.containers.records import Paths
from engine.errors import Conflict, EngineError
from engine.locks import file_lock
from engine.runtime.oci import pid_alive


def remove(
    eng, ref: str, *, force: bool = False, volumes: bool = False, keep_exit_file: bool = False
) -> str:
    c = records.load(eng.db, ref)
    p = Paths(eng.config, c.id)
    if c.state in records.ACTIVE and pid_alive(c.pid):
        if not force:
            raise Conflict(
                f"cannot remove container {c.name}: container is {c.state}: stop the container before removing or force remove",
                obj=c.name,
            )
        lifecycle.stop(eng, c, timeout=0)
    with file_lock(p.lock):
        try:
            c = records.load(eng.db, c.id)
        except EngineError:
            try:
                p.lock.unlink()
            except FileNotFoundError:
                pass
            return c.id  # someone else removed it meanwhile
        if c.state in records.ACTIVE:
            lifecycle._cleanup_locked(eng, c, restart_ok=False)  # tears down, too
        else:
            lifecycle.teardown(eng, c)
        with eng.db.write() as db:
            db.execute("UPDATE containers SET state='removing' WHERE id=?", (c.id,))
        shutil.rmtree(p.dir, ignore_errors=True)
        if not keep_exit_file:
            try:
                p.exit_file.unlink()
            except FileNotFoundError:
                pass
        eng.release_container_addresses(c.id)
        with eng.db.write() as db:
            db.execute("DELETE FROM containers WHERE id=?", (c.id,))
    try:
        p.lock.unlink()
    except FileNotFoundError:
        pass
    if volumes:
        for name in (c.extra.get("anon_volumes") or {}).values():
            try:
                eng.remove_volume(name, force=True)
            except EngineError:
                pass  # in use by another container (--volumes-from) or gone
    eng.emit("container", "destroy", c.id, name=c.name, image=c.image_ref)
    return c.id
