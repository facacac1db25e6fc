"""The log keeper: Docker's ``--log-opt max-file=N`` on top of conmon's rotation.

conmon caps a k8s-file log at ``--log-size-max`` by writing a fresh file and
renaming it over the old one: the old lines are simply gone. Docker's json-file
driver keeps the N-1 previous files instead. This helper (one per engine
instance, like the health-check runner; DESIGN.md "Long-lived helpers") holds an
open descriptor on the current log of each running container with max-file > 1,
so the inode conmon replaces is still readable; when it sees the path point at a
new inode it shifts ``ctr.log.1`` .. ``ctr.log.N-2`` up by one and copies the old
file to ``ctr.log.1``. ``logs`` reads ``ctr.log.N-1`` .. ``ctr.log.1`` then
``ctr.log``.

It polls (one stat per watched log every TICK): a writer that rotates twice
within one tick loses the file in between, which only matters for logs that
outrun max-size in less than TICK.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine import helpers

NAME = "logkeeper"
ACTOR = "berth-logkeeper"
TICK = 0.05
IDLE_EXIT = 5.0  # seconds without a watched container before the keeper exits
IDLE_EXIT_ENV = "BERTH_LOGKEEPER_IDLE_EXIT"
OWNER_CHECK = 2.0

# Running containers whose logs keep more than one file.
_WANTED_SQL = (
    "SELECT id, config FROM containers WHERE state IN ('running', 'paused')"
    " AND config LIKE '%\"log_max_file\":%' AND config NOT LIKE '%\"log_max_file\":1,%'"
)


def rotated_paths(log: Path, max_file: int) -> list[Path]:
    """``ctr.log.1`` .. ``ctr.log.{max_file-1}``, newest first."""
    return [log.with_name(f"{log.name}.{i}") for i in range(1, max(max_file, 1))]


def files_in_order(log: Path) -> list[Path]:
    """Every file of a container's log, oldest first (what ``logs`` reads)."""
    olds = []
    i = 1
    while (p := log.with_name(f"{log.name}.{i}")).exists():
        olds.append(p)
        i += 1
    return [*reversed(olds), log]


def needed(eng) -> bool:
    return bool(_wanted(eng))


def _wanted(eng) -> dict[str, int]:
    """Container ID -> its max-file, for running containers keeping several files."""
    import json

    out = {}
    for r in eng.db.query(_WANTED_SQL):
        try:
            n = int(json.loads(r["config"])["opts"].get("log_max_file") or 1)
        except (ValueError, KeyError, TypeError):
            continue
        if n > 1:
            out[r["id"]] = n
    return out


def ensure_keeper(eng) -> int:
    return helpers.ensure(eng, NAME, helpers.python_argv("engine.containers.logkeeper", eng))


def stop_keeper(eng, timeout: float = 5.0) -> bool:
    return helpers.stop(eng, NAME, timeout)


@dataclass
class _Watch:
    log: Path
    max_file: int
    fd: int = -1
    ino: int = 0


def _rotate(w: _Watch) -> None:
    """The path now names a new file: keep the one we hold open as ``.1``."""
    olds = rotated_paths(w.log, w.max_file)
    if olds:
        for older, newer in zip(reversed(olds[1:]), reversed(olds[:-1]), strict=True):
            if newer.exists():
                os.replace(newer, older)
        tmp = w.log.with_name(f".{w.log.name}.keep")
        with open(tmp, "wb") as out, os.fdopen(os.dup(w.fd), "rb") as src:
            src.seek(0)
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, olds[0])


class Keeper:
    def __init__(self, eng):
        self.eng = eng
        self.watches: dict[str, _Watch] = {}
        self.stopping = False
        self.t0 = self.last_owner_check = time.monotonic()
        self.db_ino = helpers.db_inode(eng)
        try:
            self.idle_exit = float(os.environ.get(IDLE_EXIT_ENV) or IDLE_EXIT)
        except ValueError:
            self.idle_exit = IDLE_EXIT

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        idle_since: float | None = None
        last_sync = 0.0
        try:
            while not self.stopping:
                now = time.monotonic()
                if now - last_sync >= 0.5:  # new or gone containers: a DB read twice a second
                    self._sync()
                    last_sync = now
                for w in list(self.watches.values()):
                    self._check(w)
                if self.watches:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= self.idle_exit and self._retire():
                    return 0
                if not self._still_owner():
                    return 0
                time.sleep(TICK)
        finally:
            helpers.deregister(self.eng, NAME, os.getpid())
            for w in self.watches.values():
                self._check(w)  # a rotation in the last tick is still kept
                if w.fd >= 0:
                    os.close(w.fd)
        return 0

    def _sync(self) -> None:
        from engine.containers.records import Paths

        wanted = _wanted(self.eng)
        for cid in [c for c in self.watches if c not in wanted]:
            w = self.watches.pop(cid)
            self._check(w)
            if w.fd >= 0:
                os.close(w.fd)
        for cid, n in wanted.items():
            if cid not in self.watches:
                w = _Watch(Paths(self.eng.config, cid).log, n)
                self._open(w)
                self.watches[cid] = w

    @staticmethod
    def _open(w: _Watch) -> bool:
        try:
            w.fd = os.open(w.log, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        w.ino = os.fstat(w.fd).st_ino
        return True

    def _check(self, w: _Watch) -> None:
        if w.fd < 0:
            self._open(w)  # the file was missing last time
            return
        try:
            ino = os.stat(w.log).st_ino
        except FileNotFoundError:
            return  # mid-rename, or the container is being removed
        if ino == w.ino:
            return
        try:
            _rotate(w)
        except OSError as e:
            print(f"logkeeper: {w.log}: {e}", file=sys.stderr, flush=True)
        os.close(w.fd)
        w.fd = -1
        self._open(w)

    def _retire(self) -> bool:
        from engine.locks import file_lock

        with file_lock(helpers.lock_path(self.eng, NAME), timeout=60):
            if needed(self.eng):
                return False
            helpers.deregister(self.eng, NAME, os.getpid())
            return True

    def _still_owner(self) -> bool:
        now = time.monotonic()
        if now - self.last_owner_check < OWNER_CHECK:
            return True
        self.last_owner_check = now
        return helpers.still_owner(self.eng, NAME, self.db_ino)


def main(argv: list[str] | None = None) -> int:
    from engine.api import Engine

    _args, config = helpers.parse_helper_args(argv, "berth-logkeeper", "Berth's log keeper")
    return Keeper(Engine(config, actor=ACTOR)).run()


if __name__ == "__main__":
    sys.exit(main())
