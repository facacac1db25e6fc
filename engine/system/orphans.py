"""Find (and with ``fix``, remove) what crashed engine processes left behind.

A CLI killed mid-start, a host that lost power, conmon killed by hand: each
can leave kernel objects (mounts, cgroups, processes, network namespaces) or
files (container dirs, bundles, lock files) that no container row accounts
for, or rows that say "running" about processes that are gone.

Safety rules, because this runs next to live engine processes:
  - everything is keyed on this instance's root/run/prefix, so other
    instances (tests, simulated hosts) on the same kernel are never touched;
  - a container whose ``ctr-<ID>.lock`` is held is being worked on right now
    and is skipped; for the others the lock is held while acting, and the row
    is re-read under it, so a container started meanwhile is left alone;
  - files younger than ``grace`` seconds are left alone (a create may be
    between writing them and its row becoming visible);
  - every action accepts "already gone", so running it twice is harmless.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from engine.cgroups import CgroupLayout, detect, list_children, open_cgroup
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.state import StateDB
from engine.system.findings import Finding

HEX64 = re.compile(r"^[0-9a-f]{64}$")
LIVE_STATES = ("running", "paused")
CHECK_ACTOR = "system:check"
_OCTAL = re.compile(r"\\([0-7]{3})")

# Order of the actions for one container ID: stop processes before removing
# their cgroup, unmount before deleting the directory under the mount, and
# drop the lock (held during all of it) last.
KIND_ORDER = ("conmon", "cgroup", "runtime-state", "mount", "netns", "dir", "bundle", "lock")
# Kinds that are orphans when the ID has no row at all (the rest: when it is not running).
NO_ROW_KINDS = {"conmon", "runtime-state", "dir", "bundle", "lock"}


def pid_alive(pid: int, proc: Path = Path("/proc")) -> bool:
    """The process exists and is not a zombie (a zombie has finished its work)."""
    if pid <= 0:
        return False
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


@dataclass
class Candidate:
    kind: str
    cid: str
    obj: str  # path, pid or name
    detail: str = ""


@dataclass
class Scanner:
    """Reads this instance's objects from the kernel and the disk."""

    config: EngineConfig
    layout: CgroupLayout | None
    proc: Path = Path("/proc")
    mountinfo: Path = Path("/proc/self/mountinfo")
    grace: float = 60.0
    now: float = field(default_factory=time.time)

    @property
    def containers_dir(self) -> Path:
        # Mount points in mountinfo are canonical paths.
        return Path(os.path.realpath(self.config.containers_dir))

    def _old_enough(self, p: Path) -> bool:
        try:
            return self.now - p.lstat().st_mtime >= self.grace
        except OSError:
            return False

    def mounts(self) -> dict[str, list[str]]:
        """Mount points under ``<root>/containers/<ID>/``, per ID, deepest first."""
        base = str(self.containers_dir) + "/"
        out: dict[str, list[str]] = {}
        try:
            text = self.mountinfo.read_text()
        except OSError:
            return out
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 5:
                continue
            point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
            if point.startswith(base):
                cid = point[len(base) :].split("/", 1)[0]
                if HEX64.match(cid):
                    out.setdefault(cid, []).append(point)
        for points in out.values():
            points.sort(key=lambda p: p.count("/"), reverse=True)
        return out

    def _bases(self) -> tuple[str, ...]:
        # conmon's argv has the path as configured, mountinfo the canonical one.
        return tuple({str(self.config.containers_dir) + "/", str(self.containers_dir) + "/"})

    def conmons(self) -> dict[str, list[int]]:
        """Processes whose argv has ``--persist-dir <root>/containers/<ID>/...`` (conmon's)."""
        out: dict[str, list[int]] = {}
        me = os.getpid()
        try:
            entries = [e for e in os.listdir(self.proc) if e.isdigit()]
        except OSError:
            return out
        for e in entries:
            pid = int(e)
            if pid == me:
                continue
            cid = self.conmon_target(pid)
            if cid:
                out.setdefault(cid, []).append(pid)
        return out

    def conmon_target(self, pid: int) -> str | None:
        """The container ID in ``pid``'s ``--persist-dir`` argument, if it is one of ours."""
        bases = self._bases()
        try:
            argv = (self.proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        for i, arg in enumerate(argv):
            value = b""
            if arg == b"--persist-dir" and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(b"--persist-dir="):
                value = arg.split(b"=", 1)[1]
            path = value.decode(errors="replace")
            for base in bases:
                if path.startswith(base):
                    cid = path[len(base) :].split("/", 1)[0]
                    if HEX64.match(cid):
                        return cid
        return None

    def cgroups(self) -> list[str]:
        # Only container-shaped names: anything else under /<prefix> is not ours to judge.
        if self.layout is None:
            return []
        names = [p.rsplit("/", 1)[-1] for p in list_children(self.layout, self.config.prefix)]
        return [n for n in names if HEX64.match(n)]

    def netns(self) -> dict[str, str]:
        """short ID -> name for ``<prefix>-<12 hex>`` namespaces."""
        from engine.netns import list_netns

        head = f"{self.config.prefix}-"
        out = {}
        for name in list_netns(head):
            short = name[len(head) :]
            if len(short) == 12 and all(c in "0123456789abcdef" for c in short):
                out[short] = name
        return out

    def id_dirs(self, parent: Path) -> list[Path]:
        try:
            entries = list(parent.iterdir())
        except OSError:
            return []
        return [p for p in entries if HEX64.match(p.name) and self._old_enough(p)]

    def runtime_states(self) -> list[Path]:
        out: list[Path] = []
        for rt in ("crun", "runc"):
            out += self.id_dirs(self.config.run / "runtime" / rt)
        return out

    def stale_locks(self, row_ids: set[str]) -> list[Candidate]:
        """Lock files of objects that no longer exist, unheld and older than ``grace``."""
        out: list[Candidate] = []
        layers = self.config.images_dir / "layers"
        try:
            entries = list(self.config.locks_dir.iterdir())
        except OSError:
            return out
        for p in entries:
            name = p.name
            if name.startswith("ctr-") and name.endswith(".lock"):
                cid = name[4:-5]
                if HEX64.match(cid) and cid not in row_ids and self._old_enough(p):
                    out.append(Candidate("lock", cid, str(p), "container is gone"))
            elif name.startswith("images-layer-") and name.endswith(".lock"):
                hexid = name[len("images-layer-") : -5]
                if not (layers / hexid).exists() and self._old_enough(p) and not lock_held(p):
                    out.append(Candidate("lock", "", str(p), "layer is gone"))
        return out


def lock_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextmanager
def try_container_lock(config: EngineConfig, cid: str) -> Iterator[bool]:
    """Hold ``ctr-<ID>.lock`` if it is free (True) or say it is busy (False).

    Never creates the file: an orphan should not grow a lock file.
    """
    path = config.locks_dir / f"ctr-{cid}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# -- rows -----------------------------------------------------------------------------------


def _row_is_dead(row, proc: Path) -> str:
    """Why a running/paused row is dead ("" when it is not)."""
    if not pid_alive(row["pid"], proc):
        return f"its process {row['pid']} is gone"
    if row["conmon_pid"] and not pid_alive(row["conmon_pid"], proc):
        return f"its monitor (conmon {row['conmon_pid']}) is gone"
    return ""


def mark_exited(config: EngineConfig, db: StateDB, cid: str) -> None:
    """Default ``on_dead_row``: record the exit (from conmon's exit file, else 137) and a die event."""
    from engine.events import append

    try:
        code = int((config.exits_dir / cid).read_text().strip() or "137")
    except (OSError, ValueError):
        code = 137  # killed: nobody was left to record the status
    with db.write() as c:
        cur = c.execute(
            "UPDATE containers SET state='exited', pid=0, conmon_pid=0, exit_code=?, finished_at=?"
            " WHERE id=? AND state IN ('running','paused')",
            (code, time.time(), cid),
        )
        changed = cur.rowcount
    row = db.one("SELECT name, image_ref FROM containers WHERE id=?", (cid,))
    if changed and row:
        append(db, CHECK_ACTOR, "container", "die", cid, exitCode=str(code),
               image=row["image_ref"], name=row["name"])  # fmt: skip


def _kill_container_remains(
    config: EngineConfig, layout: CgroupLayout | None, row, proc: Path
) -> None:
    """A container whose conmon died has nobody to report its exit: stop it first."""
    if layout is not None:
        try:
            open_cgroup(layout, f"{config.prefix}/{row['id']}").kill_all(signal.SIGKILL)
        except EngineError:
            pass
    try:
        os.kill(row["pid"], signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + 3.0
    while pid_alive(row["pid"], proc) and time.monotonic() < deadline:
        time.sleep(0.02)


def _dead_rows(
    config: EngineConfig,
    db: StateDB,
    fix: bool,
    on_dead_row: Callable[[str], None],
    layout: CgroupLayout | None,
    proc: Path,
) -> tuple[list[Finding], set[str]]:
    out: list[Finding] = []
    dead: set[str] = set()
    rows = db.query(
        "SELECT id, state, pid, conmon_pid FROM containers WHERE state IN ('running','paused')"
    )
    for row in rows:
        why = _row_is_dead(row, proc)
        if not why:
            continue
        cid = row["id"]
        dead.add(cid)
        msg = f"container {cid[:12]} is marked {row['state']} but {why}"
        if not fix:
            out.append(Finding("dead-row", "warn", msg, hint=_FIX_HINT, obj=cid))
            continue
        try:
            if pid_alive(row["pid"], proc):
                _kill_container_remains(config, layout, row, proc)
            on_dead_row(cid)
            after = db.one("SELECT state FROM containers WHERE id=?", (cid,))
            if after is not None and after["state"] in LIVE_STATES:
                raise EngineError(f"still marked {after['state']} after cleanup")
        except Exception as err:  # one bad row must not stop the rest of the check
            out.append(Finding("dead-row", "error", f"{msg}; cleanup failed: {err}", obj=cid))
            continue
        out.append(Finding("dead-row", "warn", msg + ": marked exited", fixed=True, obj=cid))
    return out, dead


# -- actions --------------------------------------------------------------------------------

_FIX_HINT = "`berth system check --fix` removes it"


def _describe(c: Candidate, cfg: EngineConfig) -> str:
    short = c.cid[:12]
    return {
        "conmon": f"conmon process {c.obj} monitors container {short}, which does not exist",
        "cgroup": f"cgroup /{cfg.prefix}/{short}… has no running container{c.detail}",
        "runtime-state": f"OCI runtime state {c.obj} belongs to no container",
        "mount": f"mount {c.obj} belongs to no running container",
        "netns": f"network namespace {c.obj} belongs to no running container",
        "dir": f"container directory {c.obj} belongs to no container",
        "bundle": f"bundle directory {c.obj} belongs to no container",
        "lock": f"lock file {c.obj} is left over ({c.detail})",
    }[c.kind]


def _act(c: Candidate, cfg: EngineConfig, sc: Scanner) -> None:
    if c.kind == "conmon":
        pid = int(c.obj)
        if sc.conmon_target(pid) == c.cid:  # re-check: the pid may have been reused
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    elif c.kind == "cgroup":
        if sc.layout is not None:
            cg = open_cgroup(sc.layout, f"{cfg.prefix}/{c.cid}")
            cg.kill_all(signal.SIGKILL)
            cg.remove(timeout=3.0)
    elif c.kind == "mount":
        from engine.mounts import umount

        umount(c.obj, detach=True)
    elif c.kind == "netns":
        from engine.netns import delete_netns

        delete_netns(c.obj)
    elif c.kind in ("dir", "bundle", "runtime-state"):
        path = Path(c.obj)
        # Never recurse into a mount: that would delete files of whatever is mounted.
        left = [p for ps in sc.mounts().values() for p in ps if p.startswith(str(path) + "/")]
        if left:
            raise EngineError(f"still has mounts: {', '.join(left)}", obj=c.obj)
        shutil.rmtree(path, ignore_errors=False, onerror=_ignore_missing)
    elif c.kind == "lock":
        try:
            os.unlink(c.obj)
        except FileNotFoundError:
            pass


def _ignore_missing(func, path, exc_info) -> None:  # type: ignore[no-untyped-def]
    err = exc_info[1]
    if isinstance(err, OSError) and err.errno == errno.ENOENT:
        return
    raise err


def find_orphans(
    config: EngineConfig,
    db: StateDB,
    fix: bool,
    *,
    on_dead_row: Callable[[str], None] | None = None,
    grace: float = 60.0,
    layout: CgroupLayout | None = None,
    proc: Path = Path("/proc"),
    mountinfo: Path = Path("/proc/self/mountinfo"),
) -> list[Finding]:
    """Every leftover of this instance; with ``fix``, each is removed. Nothing found: []."""
    if layout is None:
        try:
            layout = detect()
        except EngineError:
            layout = None
    hook = on_dead_row or (lambda cid: mark_exited(config, db, cid))
    out, dead = _dead_rows(config, db, fix, hook, layout, proc)

    rows = {r["id"]: r for r in db.query("SELECT id, state, pid FROM containers")}
    live = {i for i, r in rows.items() if r["state"] in LIVE_STATES and i not in dead}
    sc = Scanner(config, layout, proc=proc, mountinfo=mountinfo, grace=grace)

    cands: list[Candidate] = []
    for cid, pids in sc.conmons().items():
        cands += [Candidate("conmon", cid, str(p)) for p in pids if cid not in rows]
    for cid in sc.cgroups():
        if cid not in live:
            cands.append(Candidate("cgroup", cid, f"/{config.prefix}/{cid}", _procs_left(sc, cid)))
    cands += [Candidate("runtime-state", p.name, str(p)) for p in sc.runtime_states()
              if p.name not in rows]  # fmt: skip
    for cid, points in sc.mounts().items():
        if cid not in live:
            cands += [Candidate("mount", cid, p) for p in points]
    for parent, kind in ((config.containers_dir, "dir"), (config.run / "containers", "bundle")):
        cands += [Candidate(kind, p.name, str(p)) for p in sc.id_dirs(parent) if p.name not in rows]
    cands += sc.stale_locks(set(rows))
    # A netns name has only 12 hex digits: file it under the full ID when one is known,
    # so it is removed under that container's lock with the rest of its leftovers.
    known = set(rows) | {c.cid for c in cands}
    live_short = {i[:12] for i in live}
    for short, name in sc.netns().items():
        if short not in live_short:
            full = sorted(i for i in known if i.startswith(short))
            cands.append(Candidate("netns", full[0] if full else short, name))

    by_id: dict[str, list[Candidate]] = {}
    for c in cands:
        by_id.setdefault(c.cid, []).append(c)
    for cid, group in sorted(by_id.items()):
        group.sort(key=lambda c: KIND_ORDER.index(c.kind))
        out += _handle_group(config, db, cid, group, fix, sc, dead)
    return out


def _procs_left(sc: Scanner, cid: str) -> str:
    if sc.layout is None:
        return ""
    try:
        n = len(open_cgroup(sc.layout, f"{sc.config.prefix}/{cid}").procs())
    except EngineError:
        return ""
    return f" ({n} processes left)" if n else ""


def _handle_group(
    config: EngineConfig,
    db: StateDB,
    cid: str,
    group: list[Candidate],
    fix: bool,
    sc: Scanner,
    dead: set[str],
) -> list[Finding]:
    out: list[Finding] = []
    with try_container_lock(config, cid) if HEX64.match(cid) else _free() as free:
        if not free:
            return [Finding("orphan-busy", "ok", f"container {cid[:12]} is busy; skipped",
                            obj=cid)]  # fmt: skip
        row = db.one("SELECT state FROM containers WHERE id=?", (cid,)) if cid else None
        for c in group:
            # Re-read under the lock: a container created or started since the scan stays.
            # (A dead row still says "running" when not fixing; report what a fix would do.)
            running = row is not None and row["state"] in LIVE_STATES and cid not in dead
            if row is not None and (c.kind in NO_ROW_KINDS or running):
                continue
            msg = _describe(c, config)
            if not fix:
                out.append(Finding(f"orphan-{c.kind}", "warn", msg, hint=_FIX_HINT, obj=c.obj))
                continue
            try:
                _act(c, config, sc)
            except (EngineError, OSError) as err:
                out.append(Finding(f"orphan-{c.kind}", "error", f"{msg}; removing it failed: {err}",
                                   obj=c.obj))  # fmt: skip
                continue
            out.append(
                Finding(f"orphan-{c.kind}", "warn", msg + ": removed", fixed=True, obj=c.obj)
            )
    return out


@contextmanager
def _free() -> Iterator[bool]:
    yield True
