"""`python -m dashboard.live.relay`: forwards the engine's events log to the channel layer.

Every event appended by any client (the dashboard, the CLI, conmon's exit command)
goes, in seq order, to the channel-layer group "events" as
``{"type": "engine.event", "event": {...}}`` (dict from dashboard.services.events).
Pages that update live (events, containers, topology) join that group.

The log is followed cheaply: the database and its WAL are stat()ed every POLL seconds
and read only when one changed (and at least every IDLE_READ seconds, in case a write
kept the same mtime and size). The last forwarded seq is kept in Redis, so a restarted
relay resumes where it stopped; a first start begins at the log's end (pages read the
past from the log themselves). After each batch the new events are also imported into
the audit log (CLI actions) and, every few seconds, lost tasks are reaped.

serve.py runs it as a child; SIGINT/SIGTERM stop it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

log = logging.getLogger("dashboard.live.relay")

GROUP = "events"
POLL = 0.02  # seconds between stat()s of the database files (two syscalls)
IDLE_READ = 2.0  # read the log at least this often even when the files look unchanged
REAP_EVERY = 5.0  # seconds between checks for tasks whose worker was lost
CURSOR_KEY = "berth:relay:seq:{}"  # per engine root: one Redis may serve several


def _stamp(paths: list) -> tuple:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def _audit_importer() -> Callable[[], Any] | None:
    """The accounts app's import of CLI events into the audit log, when it exists."""
    try:
        from dashboard.services.accounts import import_engine_events
    except ImportError:
        return None
    return import_engine_events


class Relay:
    def __init__(self) -> None:
        from channels.layers import get_channel_layer

        from dashboard.live.tasks_api import redis_client
        from dashboard.services import events

        self.events = events
        self.layer = get_channel_layer()
        self.redis = redis_client()
        self.key = CURSOR_KEY.format(events._engine().config.root)
        self.files = events.db_files()
        self.audit = _audit_importer()
        stored = self.redis.get(self.key)
        last = events.last_seq()
        # A stored position past the log's end means the log was made anew: its end.
        self.seq = int(stored) if stored is not None and int(stored) <= last else last
        self.stopping = asyncio.Event()
        self.audit_due = False
        self.last_reap = 0.0
        self.side_task: asyncio.Future | None = None

    async def forward(self) -> int:
        """Send every event after self.seq; returns how many were sent."""
        sent = 0
        while True:
            batch = await asyncio.to_thread(self.events.after, self.seq, 500)
            for ev in batch:
                await self.layer.group_send(GROUP, {"type": "engine.event", "event": ev})
                self.seq = ev["seq"]
                sent += 1
            if batch:
                self.redis.set(self.key, self.seq)
            if len(batch) < 500:
                return sent

    def side_jobs(self, new_events: bool) -> None:
        """Audit import after new events, task reaping every REAP_EVERY seconds: in
        the background, one at a time, so they never hold up forwarding."""
        self.audit_due |= new_events and self.audit is not None
        if self.side_task is not None and not self.side_task.done():
            return
        now = time.monotonic()
        jobs = []
        if self.audit_due:
            self.audit_due = False
            jobs.append(("audit import", self.audit))
        if now - self.last_reap >= REAP_EVERY:
            self.last_reap = now
            jobs.append(("task reaping", _reap))
        if jobs:
            self.side_task = asyncio.ensure_future(asyncio.to_thread(_run_jobs, jobs))

    async def run(self) -> None:
        stamp: tuple = ()
        last_read = 0.0
        print(f"berth relay: following events after seq {self.seq}", flush=True)
        while not self.stopping.is_set():
            now_stamp = _stamp(self.files)
            now = time.monotonic()
            sent = 0
            if now_stamp != stamp or now - last_read >= IDLE_READ:
                stamp, last_read = now_stamp, now
                try:
                    sent = await self.forward()
                except Exception as e:  # Redis or the database busy: try again shortly
                    log.warning("forwarding failed: %s", e)
                    await asyncio.sleep(1)
            self.side_jobs(sent > 0)
            try:
                await asyncio.wait_for(self.stopping.wait(), POLL)
            except TimeoutError:
                pass
        if self.side_task is not None:
            await self.side_task


def _reap() -> None:
    from dashboard.live.tasks_api import reap_stale

    reaped = reap_stale()
    if reaped:
        log.warning("tasks failed after their worker was lost: %s", ", ".join(reaped))


def _run_jobs(jobs: list) -> None:
    for what, fn in jobs:
        try:
            _db_call(fn)
        except Exception as e:  # the audit page imports on its own; reaping comes again
            log.warning("%s failed: %s", what, e)


def _db_call(fn: Callable[[], Any]) -> Any:
    """Run a Django ORM function in this thread and close its connection after, so
    the worker threads of asyncio.to_thread never hold one open for long."""
    from django.db import close_old_connections

    close_old_connections()
    try:
        return fn()
    finally:
        close_old_connections()


async def amain() -> None:
    relay = Relay()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, relay.stopping.set)
    await relay.run()


def main() -> None:
    import django

    logging.basicConfig(level=logging.INFO, format="berth relay: %(message)s", stream=sys.stderr)
    django.setup()
    asyncio.run(amain())


if __name__ == "__main__":
    main()
