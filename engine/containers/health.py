"""Health checks: one runner process per engine instance, with Docker's semantics.

A Python process per container would cost ~10 MB each (DESIGN.md), so one
long-lived helper (engine.helpers) probes every running container that has a
health check. ``lifecycle.start`` calls :func:`ensure_runner` after starting
such a container; the runner exits by itself once no running container has a
check for ``IDLE_EXIT`` seconds, and ``berth system boot`` restarts it.

Probes run as ``<runtime> exec <id> ...`` child processes, so this process
never enters a namespace itself (no ``setns`` in a threaded process); one
thread per probe in flight waits on its child, and the main loop alone writes
the state database (only the ``health`` column, so a concurrent stop, rename or
restart of the row is never clobbered).

Docker's rules (daemon/health.go): the first probe runs ``Interval`` after the
start, the next ``Interval`` after the previous one ended; exit 0 is healthy;
any other exit or a timeout is a failure; failures before the first success
and within ``StartPeriod`` do not count; ``Retries`` consecutive failures make
the container unhealthy; one success makes it healthy; the log keeps the last
five results, their output cut at 4096 bytes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine import helpers
from engine.containers import records
from engine.runtime.oci import OCIRuntime, pid_alive

NAME = "health"
ACTOR = "berth-health"
TICK = 0.25  # how often the runner looks for due probes
IDLE_EXIT = 10.0  # exit after this long without a running container with a check
IDLE_EXIT_ENV = "BERTH_HEALTH_IDLE_EXIT"  # tests shorten it (seconds)
ERROR_EXIT = 60.0  # give up after this long of failing ticks
# How often (and how long after its start) the runner checks it is still the recorded one.
OWNER_CHECK = 5.0
MAX_LOG = 5
MAX_OUTPUT = 4096
DEFAULT_INTERVAL = DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3

# Running containers that have a health check; json_extract keeps the filter in SQLite.
_DUE_SQL = (
    "SELECT id, name, image_ref, pid, started_at, health FROM containers "
    "WHERE state='running' AND json_extract(config, '$.health') IS NOT NULL"
)


# -- the engine side --------------------------------------------------------------------


def ensure_runner(eng) -> int:
    """Start this instance's health runner unless a live one is recorded; its pid."""
    return helpers.ensure(eng, NAME, helpers.python_argv("engine.containers.health", eng))


def stop_runner(eng, timeout: float = 5.0) -> bool:
    return helpers.stop(eng, NAME, timeout)


def needed(eng) -> bool:
    """Does any running container have a health check?"""
    return eng.db.one(_DUE_SQL + " LIMIT 1") is not None


# -- one probe --------------------------------------------------------------------------


def probe_argv(test: list[str]) -> list[str] | None:
    """Docker's Healthcheck.Test to the argv to exec; None for NONE/empty."""
    if not test:
        return None
    kind, rest = test[0], list(test[1:])
    if kind == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(rest)] if rest else None
    if kind == "CMD":
        return rest or None
    if kind == "NONE":
        return None
    return list(test)  # no keyword: Docker treats a bare list as CMD


def go_duration(seconds: float) -> str:
    """Go's time.Duration String() for the values health options take (1s, 500ms, 1m30s)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    out = f"{h}h" if h else ""
    out += f"{m}m" if h or m else ""
    return out + f"{s:g}s"


def run_probe(
    rt: OCIRuntime,
    cid: str,
    argv: list[str],
    timeout: float,
    pid_file: Path,
    procs: set[subprocess.Popen] | None = None,
) -> tuple[int, str]:
    """Exec ``argv`` in the container; (exit code, output). A timeout kills the
    probe inside the container (by the pid the runtime wrote) and gives -1.
    ``procs`` (if given) holds the runtime process while it runs, so that a
    stopping runner can kill what is in flight."""
    cmd = [rt.path, f"--root={rt.state_root}", "exec", f"--pid-file={pid_file}", cid, *argv]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        return -1, f"cannot run {rt.name} exec: {e.strerror}"
    if procs is not None:
        procs.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
        text = out[:MAX_OUTPUT].decode(errors="replace")
    except subprocess.TimeoutExpired:
        # Killing `runtime exec` would orphan the probe inside the container: kill
        # it (and what it forked, `sh -c` often does) by the pid the runtime wrote.
        kill_tree(_read_pid(pid_file))
        proc.kill()
        proc.communicate()
        code, text = -1, f"Health check exceeded timeout ({go_duration(timeout)})"
    finally:
        if procs is not None:
            procs.discard(proc)
        try:
            pid_file.unlink()
        except FileNotFoundError:
            pass
    return code, text


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (gathered first: once the parent dies
    they are re-parented to the container's init and lose the link)."""
    if pid <= 0:
        return
    victims, todo = [], [pid]
    while todo and len(victims) < 1000:
        p = todo.pop()
        victims.append(p)
        todo += _children(p)
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def rfc3339(ts: float) -> str:
    from engine.containers.inspect import rfc3339 as fmt

    return fmt(ts)


def apply_result(
    state: dict, hc: dict, started_at: float, start: float, end: float, code: int, output: str
) -> dict:
    """Docker's handleProbeResult: the new State.Health after one probe."""
    new = {
        "Status": state.get("Status") or "starting",
        "FailingStreak": int(state.get("FailingStreak") or 0),
        "Log": list(state.get("Log") or []),
    }
    new["Log"].append(
        {"Start": rfc3339(start), "End": rfc3339(end), "ExitCode": code, "Output": output}
    )
    new["Log"] = new["Log"][-MAX_LOG:]
    if code == 0:
        new["FailingStreak"] = 0
        new["Status"] = "healthy"
        return new
    # Before the first success, failures within the start period do not count.
    if new["Status"] == "starting" and start - started_at < float(hc.get("StartPeriod") or 0):
        return new
    new["FailingStreak"] += 1
    retries = int(hc.get("Retries") or 0) or DEFAULT_RETRIES
    if new["FailingStreak"] >= retries:
        new["Status"] = "unhealthy"
    return new


# -- the runner process -----------------------------------------------------------------


@dataclass
class _Target:
    """The schedule of one container run (a restart is a new run: new started_at)."""

    cid: str
    name: str
    image: str
    pid: int
    started_at: float
    hc: dict
    argv: list[str] | None
    rt: OCIRuntime | None
    state: dict = field(default_factory=dict)
    next_due: float = 0.0
    inflight: bool = False
    pid_file: Path | None = None  # of the probe in flight


@dataclass
class _Result:
    cid: str
    started_at: float
    start: float
    end: float
    code: int
    output: str
    discard: bool  # the container went away during the probe: not its health's fault


class Runner:
    def __init__(self, eng):
        self.eng = eng
        self.targets: dict[str, _Target] = {}
        self.results: queue.Queue[_Result] = queue.Queue()
        self.stopping = threading.Event()
        self.procs: set[subprocess.Popen] = set()  # probes in flight
        self.pid_dir = eng.config.run / "health"
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.db_ino = helpers.db_inode(eng)
        try:
            self.idle_exit = float(os.environ.get(IDLE_EXIT_ENV) or IDLE_EXIT)
        except ValueError:
            self.idle_exit = IDLE_EXIT
        self.last_owner_check = self.t0

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        idle_since: float | None = None
        failing_since: float | None = None
        try:
            while not self.stopping.is_set():
                try:
                    rows = self.eng.db.query(_DUE_SQL)
                    self._sync(rows)
                    self._launch_due()
                    if rows or any(t.inflight for t in self.targets.values()):
                        idle_since = None
                    elif idle_since is None:
                        idle_since = time.monotonic()
                    elif time.monotonic() - idle_since >= self.idle_exit and self._retire():
                        return 0
                    if not self._still_owner():
                        return 0
                    failing_since = None
                except Exception as e:  # a busy database must not end the runner...
                    print(f"health runner: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since > ERROR_EXIT:
                        return 1  # ...but a broken one must not keep it forever
                self._drain(TICK)
        finally:
            helpers.deregister(self.eng, NAME, os.getpid())
            self._kill_inflight()
        return 0

    def _kill_inflight(self) -> None:
        """Probes still running when we stop: end them (inside the container too)."""
        for t in self.targets.values():
            if t.inflight and t.pid_file:
                kill_tree(_read_pid(t.pid_file))
        for proc in list(self.procs):
            try:
                proc.kill()
            except OSError:
                pass

    # -- bookkeeping ---------------------------------------------------------------------

    def _sync(self, rows) -> None:
        live = set()
        for r in rows:
            live.add(r["id"])
            t = self.targets.get(r["id"])
            if t is None or t.started_at != r["started_at"]:
                t = self._target(r)
                if t is None:
                    continue
                self.targets[r["id"]] = t
            t.pid = r["pid"]
        for cid in list(self.targets):
            if cid not in live and not self.targets[cid].inflight:
                del self.targets[cid]

    def _target(self, r) -> _Target | None:
        try:
            c = records.load(self.eng.db, r["id"])
        except Exception:
            return None  # removed meanwhile
        from engine.containers.lifecycle import _runtime

        try:
            rt = _runtime(self.eng, c)
        except Exception as e:
            print(f"health runner: {c.name}: {e}", file=sys.stderr, flush=True)
            rt = None
        hc = dict(c.health or {})
        state = json.loads(r["health"]) if r["health"] else {}
        interval = float(hc.get("Interval") or 0) or DEFAULT_INTERVAL
        # A run that an earlier runner already probed (we were restarted by
        # `system boot`) keeps its state and is probed again right away.
        next_due = r["started_at"] + interval
        if state.get("Log"):
            next_due = min(next_due, time.time())
        return _Target(
            cid=c.id,
            name=c.name,
            image=c.image_ref,
            pid=r["pid"],
            started_at=r["started_at"],
            hc=hc,
            argv=probe_argv(hc.get("Test") or []),
            rt=rt,
            state=state,
            next_due=next_due,
        )

    def _launch_due(self) -> None:
        now = time.time()
        for t in self.targets.values():
            if t.inflight or t.argv is None or t.rt is None or now < t.next_due:
                continue
            if not pid_alive(t.pid):
                continue  # exited: its exit command reconciles the row
            t.inflight = True
            # Per run and probe: a restarted container's first probe may overlap
            # the last probe of its previous run.
            t.pid_file = self.pid_dir / f"{t.cid}-{time.monotonic_ns()}.pid"
            threading.Thread(
                target=self._probe, args=(t,), name=f"probe-{t.cid[:12]}", daemon=True
            ).start()

    def _probe(self, t: _Target) -> None:
        assert t.rt is not None and t.argv is not None and t.pid_file is not None
        timeout = float(t.hc.get("Timeout") or 0) or DEFAULT_TIMEOUT
        pid_file = t.pid_file
        start = time.time()
        try:
            code, output = run_probe(t.rt, t.cid, t.argv, timeout, pid_file, self.procs)
        except Exception as e:
            code, output = -1, f"{type(e).__name__}: {e}"
        discard = code != 0 and not pid_alive(t.pid)
        self.results.put(_Result(t.cid, t.started_at, start, time.time(), code, output, discard))

    def _drain(self, wait: float) -> None:
        """Apply finished probes; waits up to ``wait`` for the first one."""
        try:
            res = self.results.get(timeout=wait)
        except queue.Empty:
            return
        while True:
            try:
                self._apply(res)
            except Exception as e:
                print(f"health runner: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            try:
                res = self.results.get_nowait()
            except queue.Empty:
                return

    def _apply(self, res: _Result) -> None:
        t = self.targets.get(res.cid)
        if t is None or t.started_at != res.started_at:
            return  # the container was restarted or removed meanwhile
        t.inflight = False
        interval = float(t.hc.get("Interval") or 0) or DEFAULT_INTERVAL
        t.next_due = res.end + interval
        if res.discard:
            return
        old = t.state.get("Status") or "starting"
        t.state = apply_result(
            t.state, t.hc, t.started_at, res.start, res.end, res.code, res.output
        )
        with self.eng.db.write() as c:
            # Only the health column, and only for the run that was probed.
            cur = c.execute(
                "UPDATE containers SET health=? WHERE id=? AND started_at=? AND state IN ('running','paused')",
                (json.dumps(t.state), t.cid, t.started_at),
            )
        if cur.rowcount and t.state["Status"] != old:
            self.eng.emit(
                "container",
                f"health_status: {t.state['Status']}",
                t.cid,
                name=t.name,
                image=t.image,
            )

    def _retire(self) -> bool:
        """Exit when idle, unless a container with a check started meanwhile. Under
        the helper lock, so `ensure_runner` either sees us gone or sees us stay."""
        from engine.locks import file_lock

        with file_lock(helpers.lock_path(self.eng, NAME), timeout=60):
            if needed(self.eng):
                return False
            helpers.deregister(self.eng, NAME, os.getpid())
            return True

    def _still_owner(self) -> bool:
        """A runner that is no longer the recorded one (replaced, or forgotten by
        `helpers.stop`) exits, so two never probe the same containers."""
        now = time.monotonic()
        if now - self.last_owner_check < OWNER_CHECK or now - self.t0 < OWNER_CHECK:
            return True
        self.last_owner_check = now
        # A deleted root would leave our open database an orphan probing forever.
        return helpers.still_owner(self.eng, NAME, self.db_ino)


def main(argv: list[str] | None = None) -> int:
    from engine.api import Engine

    _args, config = helpers.parse_helper_args(argv, "berth-health", "Berth's health-check runner")
    eng = Engine(config, actor=ACTOR)
    return Runner(eng).run()


if __name__ == "__main__":
    sys.exit(main())
