"""Long-lived helper processes of an engine instance (DESIGN.md, "Long-lived helpers").

No daemon runs container lifecycle, but a few helpers must outlive the command
that needed them: the health-check runner, the DNS resolver of user-defined
networks. Each is one process per engine instance, started on demand by
:func:`ensure`, recorded in the ``helpers`` table (name, pid, boot id, start
time) and restarted by ``berth system boot``.

A recorded pid is trusted only while it is alive (not a zombie), was recorded
during the current boot, and its command line names this instance's root: pids
are reused, so a bare ``kill(pid, 0)`` could find an unrelated process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError
from engine.locks import file_lock
from engine.runtime.oci import pid_alive

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
# A helper's log is truncated at spawn time once it grows past this.
LOG_MAX = 1024 * 1024


@dataclass(frozen=True)
class Helper:
    name: str
    pid: int
    boot_id: str
    started: float


def current_boot_id() -> str:
    # The same value lifecycle stamps on container rows (it caches it per process).
    from engine.containers.lifecycle import _boot_id

    return _boot_id()


def lock_path(eng, name: str) -> Path:
    return eng.config.locks_dir / f"helper-{name}.lock"


def log_path(eng, name: str) -> Path:
    return eng.config.run / "helpers" / f"{name}.log"


def record(eng, name: str, pid: int, boot_id: str | None = None) -> None:
    with eng.db.write() as c:
        c.execute(
            "INSERT OR REPLACE INTO helpers(name, pid, boot_id, started) VALUES (?,?,?,?)",
            (name, pid, boot_id or current_boot_id(), time.time()),
        )


def deregister(eng, name: str, pid: int | None = None) -> None:
    """Forget a helper; with ``pid``, only if that pid is still the recorded one
    (an exiting helper must not erase the record of its successor)."""
    with eng.db.write() as c:
        if pid is None:
            c.execute("DELETE FROM helpers WHERE name=?", (name,))
        else:
            c.execute("DELETE FROM helpers WHERE name=? AND pid=?", (name, pid))


def lookup(eng, name: str) -> Helper | None:
    """The recorded helper, live or not."""
    r = eng.db.one("SELECT * FROM helpers WHERE name=?", (name,))
    return Helper(r["name"], r["pid"], r["boot_id"], r["started"]) if r else None


def all_helpers(eng) -> list[Helper]:
    rows = eng.db.query("SELECT * FROM helpers ORDER BY name")
    return [Helper(r["name"], r["pid"], r["boot_id"], r["started"]) for r in rows]


def _is_ours(eng, pid: int) -> bool:
    """Is ``pid`` a live process started for this engine instance?"""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(str(eng.config.root)) in argv


def running(eng, name: str) -> Helper | None:
    """The recorded helper if it is live, of this boot and this instance."""
    h = lookup(eng, name)
    if h and h.boot_id == current_boot_id() and _is_ours(eng, h.pid):
        return h
    return None


def spawn(eng, name: str, argv: list[str]) -> int:
    """Start ``argv`` fully detached (own session, stdio to a log) and record it.

    The caller holds the helper's lock. The child is reaped by a daemon thread
    so that a long-lived caller (the dashboard, a Celery worker) collects no
    zombies; a short-lived one (the CLI) just exits and init adopts the helper.
    """
    log = log_path(eng, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        if log.stat().st_size > LOG_MAX:
            log.unlink()
    except FileNotFoundError:
        pass
    env = dict(os.environ)
    env.update(eng.config.env())
    with open(log, "ab") as out, open(os.devnull, "rb") as devnull:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=devnull,
                stdout=out,
                stderr=out,
                env=env,
                cwd="/",
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            raise EngineError(
                f"cannot start helper {name}: {e.strerror}", obj=name, errno=e.errno
            ) from None
    threading.Thread(target=proc.wait, name=f"reap-{name}", daemon=True).start()
    _to_monitor_cgroup(eng, proc.pid)
    record(eng, name, proc.pid)
    return proc.pid


def _to_monitor_cgroup(eng, pid: int) -> None:
    """Like conmon, a helper must not die with (or be limited as) the caller's cgroup."""
    try:
        from engine.cgroups import detect, monitor_cgroup

        monitor_cgroup(detect(), eng.config.prefix).move_pid(pid)
    except EngineError:
        pass  # not fatal: the helper still works from the caller's cgroup


def ensure(eng, name: str, argv: list[str]) -> int:
    """Start the helper unless a live one is recorded; returns its pid. Idempotent."""
    with file_lock(lock_path(eng, name), timeout=60):
        h = running(eng, name)
        if h:
            return h.pid
        return spawn(eng, name, argv)


def stop(eng, name: str, timeout: float = 5.0) -> bool:
    """SIGTERM the helper (SIGKILL after ``timeout``) and forget it; True if one ran."""
    with file_lock(lock_path(eng, name), timeout=60):
        h = running(eng, name)
        deregister(eng, name)
    if not h:
        return False
    try:
        os.kill(h.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while pid_alive(h.pid):
        if time.monotonic() >= deadline:
            try:
                os.kill(h.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5.0
            while pid_alive(h.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            break
        time.sleep(0.02)
    return True


def stop_all(eng, timeout: float = 5.0) -> list[str]:
    """Stop every recorded helper (tests, `system reset`); returns the names stopped."""
    stopped = []
    for h in all_helpers(eng):
        if stop(eng, h.name, timeout):
            stopped.append(h.name)
    return stopped


def prune_stale(eng) -> list[str]:
    """Forget records of helpers that are gone (or from an earlier boot)."""
    gone = []
    for h in all_helpers(eng):
        with file_lock(lock_path(eng, h.name), timeout=60):
            if running(eng, h.name) is None:
                deregister(eng, h.name, h.pid)
                gone.append(h.name)
    return gone


def python_argv(module: str, eng) -> list[str]:
    """``python -m module --root R --run-dir D`` with the venv's interpreter
    (DESIGN.md: never a slow pyenv shim from PATH)."""
    import sys

    exe = sys.executable or shutil.which("python3") or "python3"
    return [exe, "-m", module, "--root", str(eng.config.root), "--run-dir", str(eng.config.run)]


# -- inside a helper process ----------------------------------------------------------------


def db_inode(eng) -> int:
    """The state database's inode, to notice the instance's root being deleted or replaced."""
    try:
        return os.stat(eng.config.db_path).st_ino
    except OSError:
        return -1


def still_owner(eng, name: str, db_ino: int) -> bool:
    """A helper keeps running only while it is the recorded one for ``name`` and its
    database is still the instance's (after helpers.stop, a replacement, or the root
    being deleted it must exit, so two never fight over the same job)."""
    if db_inode(eng) != db_ino:
        return False
    h = lookup(eng, name)
    return h is not None and h.pid == os.getpid()


def parse_helper_args(argv: list[str] | None, prog: str, description: str, extra=None):
    """`python -m <helper> --root R --run-dir D [...]`: the args and the instance's config."""
    import argparse

    from engine.config import EngineConfig

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--root", required=True)
    p.add_argument("--run-dir", required=True)
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    env = dict(os.environ, BERTH_ROOT=args.root, BERTH_RUN=args.run_dir)
    return args, EngineConfig.from_env(env)
