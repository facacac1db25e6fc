"""find_orphans against the real kernel: plant one leftover of every kind, find, fix, re-check.

Each test uses its own root/run and a random instance prefix, so the host's
and other instances' objects are never candidates; the finally block removes
whatever the test planted even when an assertion fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cgroups import detect, open_cgroup
from engine.config import EngineConfig
from engine.mounts import mount, umount
from engine.netns import create_netns, delete_netns, list_netns
from engine.state import StateDB
from engine.system.orphans import find_orphans, pid_alive

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


def _rand_id() -> str:
    return secrets.token_hex(32)


def _insert_row(db: StateDB, cid: str, state: str, pid: int, conmon_pid: int = 0) -> None:
    with db.write() as c:
        c.execute(
            "INSERT INTO containers(id, name, image_id, image_ref, created, state, pid,"
            " conmon_pid, config) VALUES (?,?,?,?,?,?,?,?,?)",
            (cid, "n" + cid[:8], "sha256:" + "0" * 64, "busybox", time.time(), state, pid,
             conmon_pid, "{}"),
        )  # fmt: skip


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.fixture
def cfg(tmp_path: Path) -> EngineConfig:
    # "bt" + 6 hex: the session's leak check (tests/conftest.py) looks for that prefix.
    prefix = "bt" + secrets.token_hex(3)
    return EngineConfig(root=tmp_path / "root", run=tmp_path / "run", prefix=prefix)


def _kinds(findings) -> set[str]:
    return {f.id for f in findings}


def test_plant_find_fix_recheck(cfg: EngineConfig) -> None:
    layout = detect()
    db = StateDB(cfg.db_path)
    orphan = _rand_id()  # no row: every leftover of it is an orphan
    dead = _rand_id()  # a row that says running, with a dead pid
    live = _rand_id()  # a row that is really running: nothing of it may be touched
    cdir = cfg.containers_dir / orphan
    merged = cdir / "merged"
    procs: list[subprocess.Popen] = []
    cg = open_cgroup(layout, f"{cfg.prefix}/{orphan}")
    live_cg = open_cgroup(layout, f"{cfg.prefix}/{live}")
    ns_orphan = f"{cfg.prefix}-{orphan[:12]}"
    ns_live = f"{cfg.prefix}-{live[:12]}"
    try:
        # An overlay mount, as a crashed start leaves it.
        for d in ("lower", "upper", "work", "merged", "persist"):
            (cdir / d).mkdir(parents=True)
        (cdir / "lower" / "f").write_text("x")
        mount("overlay", str(merged), "overlay", 0,
              f"lowerdir={cdir / 'lower'},upperdir={cdir / 'upper'},workdir={cdir / 'work'}")  # fmt: skip
        # A cgroup with a process still in it.
        cg.create()
        sleeper = subprocess.Popen(["sleep", "300"])
        procs.append(sleeper)
        cg.move_pid(sleeper.pid)
        # A "conmon": recognised by --persist-dir under this instance's containers dir.
        fake_conmon = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import time; time.sleep(300)",
                "--persist-dir",
                str(cdir / "persist"),
                "-c",
                orphan,
            ]  # fmt: skip
        )
        procs.append(fake_conmon)
        create_netns(ns_orphan)
        # Bundle, runtime state and lock file of the vanished container.
        bundle = cfg.run / "containers" / orphan
        bundle.mkdir(parents=True)
        (bundle / "config.json").write_text("{}")
        rt_state = cfg.run / "runtime" / "crun" / orphan
        rt_state.mkdir(parents=True)
        cfg.locks_dir.mkdir(parents=True, exist_ok=True)
        lock = cfg.locks_dir / f"ctr-{orphan}.lock"
        lock.touch()
        layer_lock = cfg.locks_dir / f"images-layer-{'a' * 64}.lock"
        layer_lock.touch()
        old = time.time() - 3600
        for p in (lock, layer_lock):
            os.utime(p, (old, old))
        # A row whose process died without anyone recording it; its exit file has 3.
        _insert_row(db, dead, "running", _dead_pid())
        cfg.exits_dir.mkdir(parents=True, exist_ok=True)
        (cfg.exits_dir / dead).write_text("3")
        # A genuinely running container with a cgroup and a netns.
        live_proc = subprocess.Popen(["sleep", "300"])
        procs.append(live_proc)
        _insert_row(db, live, "running", live_proc.pid)
        live_cg.create()
        live_cg.move_pid(live_proc.pid)
        create_netns(ns_live)
        (cfg.containers_dir / live / "merged").mkdir(parents=True)

        expected = {
            "dead-row", "orphan-mount", "orphan-cgroup", "orphan-conmon", "orphan-netns",
            "orphan-dir", "orphan-bundle", "orphan-runtime-state", "orphan-lock",
        }  # fmt: skip

        # 1. Report only: everything found, nothing changed.
        found = find_orphans(cfg, db, fix=False, grace=0, layout=layout)
        assert _kinds(found) == expected, [f.message for f in found]
        assert not any(f.fixed for f in found)
        assert all(live not in f.obj and live[:12] not in f.obj for f in found)
        assert {f.obj for f in found if f.id == "orphan-lock"} == {str(lock), str(layer_lock)}
        assert merged.is_mount() and cg.exists() and pid_alive(fake_conmon.pid)
        assert ns_orphan in list_netns(cfg.prefix) and lock.exists() and bundle.exists()
        assert db.one("SELECT state FROM containers WHERE id=?", (dead,))["state"] == "running"

        # 2. Fix: every one removed, the live container untouched.
        fixed = find_orphans(cfg, db, fix=True, grace=0, layout=layout)
        assert _kinds(fixed) == expected
        assert all(f.fixed for f in fixed), [f.message for f in fixed if not f.fixed]
        fake_conmon.wait(timeout=5)
        sleeper.wait(timeout=5)
        assert not merged.is_mount() and not cdir.exists()
        assert not cg.exists()
        assert ns_orphan not in list_netns(cfg.prefix)
        assert not bundle.exists() and not rt_state.exists()
        assert not lock.exists() and not layer_lock.exists()
        row = db.one("SELECT state, exit_code FROM containers WHERE id=?", (dead,))
        assert (row["state"], row["exit_code"]) == ("exited", 3)
        assert live_cg.exists() and pid_alive(live_proc.pid)
        assert ns_live in list_netns(cfg.prefix)
        assert (cfg.containers_dir / live).is_dir()

        # 3. Nothing left to find.
        assert find_orphans(cfg, db, fix=True, grace=0, layout=layout) == []
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
        with contextlib.suppress(Exception):
            umount(str(merged))
        for c in (cg, live_cg, open_cgroup(layout, cfg.prefix)):
            with contextlib.suppress(Exception):
                c.kill_all(signal.SIGKILL)
            with contextlib.suppress(Exception):
                c.remove(timeout=3)
        for ns in (ns_orphan, ns_live):
            with contextlib.suppress(Exception):
                delete_netns(ns)


def test_conmon_gone_kills_container_and_hook_runs(cfg: EngineConfig) -> None:
    """A row whose conmon died but whose process lives: stop it, then hand it to the hook."""
    layout = detect()
    db = StateDB(cfg.db_path)
    cid = _rand_id()
    proc = subprocess.Popen(["sleep", "300"])
    seen: list[str] = []
    try:
        _insert_row(db, cid, "running", proc.pid, conmon_pid=_dead_pid())

        def hook(i: str) -> None:
            seen.append(i)
            assert proc.poll() is not None or not pid_alive(proc.pid)
            with db.write() as c:
                c.execute("UPDATE containers SET state='exited' WHERE id=?", (i,))

        found = find_orphans(cfg, db, fix=True, grace=0, layout=layout, on_dead_row=hook)
        assert [f.id for f in found] == ["dead-row"] and found[0].fixed
        assert "monitor" in found[0].message
        assert seen == [cid]
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


def test_busy_lock_is_skipped_and_young_files_kept(cfg: EngineConfig) -> None:
    import fcntl

    db = StateDB(cfg.db_path)
    busy, young = _rand_id(), _rand_id()
    cfg.locks_dir.mkdir(parents=True)
    for cid in (busy, young):
        (cfg.containers_dir / cid).mkdir(parents=True)
    lock = cfg.locks_dir / f"ctr-{busy}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        old = time.time() - 3600
        os.utime(cfg.containers_dir / busy, (old, old))
        os.utime(lock, (old, old))
        found = find_orphans(cfg, db, fix=True, grace=60, layout=detect())
        # The busy one is someone's create in progress; the young one may be too.
        assert [f.id for f in found] == ["orphan-busy"]
        assert (cfg.containers_dir / busy).is_dir() and (cfg.containers_dir / young).is_dir()
    finally:
        os.close(fd)
