"""The engine's state database (SQLite in WAL mode).

Several processes (CLI invocations, Celery workers, the web process, conmon's
exit command) open it at once; SQLite's own locking plus ``BEGIN IMMEDIATE``
for writes keeps them consistent, and a UNIQUE constraint on container names
makes "two `--name x` at once" a race with exactly one winner.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image_id TEXT NOT NULL,
    image_ref TEXT NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL,            -- created | running | paused | exited | removing
    pid INTEGER NOT NULL DEFAULT 0,
    conmon_pid INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER NOT NULL DEFAULT 0,
    oom_killed INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL DEFAULT 0,
    finished_at REAL NOT NULL DEFAULT 0,
    restart_count INTEGER NOT NULL DEFAULT 0,
    user_stopped INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    boot_id TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,           -- JSON: the container's full configuration
    health TEXT NOT NULL DEFAULT '' -- JSON: State.Health
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_nano INTEGER NOT NULL,
    actor TEXT NOT NULL,
    type TEXT NOT NULL,
    action TEXT NOT NULL,
    obj_id TEXT NOT NULL,
    attrs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    driver TEXT NOT NULL DEFAULT 'local',
    created REAL NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    options TEXT NOT NULL DEFAULT '{}',
    anonymous INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS helpers (
    name TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    started REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_local = threading.local()
# Every cached connection by path, with its thread: close_connections() can then let
# go of an engine root a long-lived process (the test suite) is done with, and the
# connection of a thread that has ended is closed instead of kept alive from here.
_opened: dict[str, list[tuple[threading.Thread, sqlite3.Connection]]] = {}
_opened_lock = threading.Lock()


def _close(conns: list[sqlite3.Connection]) -> None:
    for c in conns:
        try:
            c.close()
        except sqlite3.Error:
            pass


def close_connections(path: Path) -> None:
    """Close the cached connections to ``path`` in every thread (3 fds each). Only
    for a root nobody is using any more; a thread that comes back reconnects."""
    with _opened_lock:
        pairs = _opened.pop(str(path), [])
    _close([c for _, c in pairs])


def _keep(path: Path, conn: sqlite3.Connection) -> None:
    """Record ``conn`` as this thread's; close those of threads that have ended."""
    gone: list[sqlite3.Connection] = []
    with _opened_lock:
        for pairs in _opened.values():
            gone += [c for t, c in pairs if not t.is_alive()]
            pairs[:] = [(t, c) for t, c in pairs if t.is_alive()]
        _opened.setdefault(str(path), []).append((threading.current_thread(), conn))
    _close(gone)


def _usable(conn: sqlite3.Connection) -> bool:
    try:
        conn.total_changes  # noqa: B018 - raises once the connection is closed
        return True
    except sqlite3.ProgrammingError:
        return False


class StateDB:
    """A thin wrapper over one SQLite connection per (thread, path)."""

    def __init__(self, path: Path):
        self.path = path
        key = f"conn:{path}"
        conn = getattr(_local, key, None)
        if conn is None or not _usable(conn):
            path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread off only so close_connections() may close it from
            # another thread; each connection is used by its own thread alone.
            conn = sqlite3.connect(
                str(path), timeout=60, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.executescript(SCHEMA)
            setattr(_local, key, conn)
            _keep(path, conn)
        self.conn: sqlite3.Connection = conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; BEGIN IMMEDIATE takes the write lock up front."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, args).fetchall()

    def one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, args).fetchone()

    # key/value ---------------------------------------------------------------------
    def get_kv(self, key: str, default: str = "") -> str:
        row = self.one("SELECT value FROM kv WHERE key=?", (key,))
        return row["value"] if row else default

    def set_kv(self, key: str, value: str) -> None:
        with self.write() as c:
            c.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, value))

    def delete_kv(self, key: str) -> None:
        with self.write() as c:
            c.execute("DELETE FROM kv WHERE key=?", (key,))


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False)
