"""One graph keeper per process (per event loop): the topology pages' shared state.

Every open topology page (a TopologyConsumer) registers here. The keeper holds
the last graph it sent, rebuilds it when an engine event says something moved
(debounced: a `run` emits several events in a row), and sends each viewer the
diff, so unchanged nodes keep their places on the page. While anyone watches it
also samples the veth counters every RATE_INTERVAL seconds and sends the rates,
and rebuilds every REFRESH seconds to catch what no event announces (a link
deleted by hand, an event the relay missed). The loop stops with the last viewer.

Graph building is blocking (SQLite, one `ip` call): it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from dashboard.services import topology as svc

log = logging.getLogger(__name__)

RATE_INTERVAL = 2.0  # seconds between counter samples
REFRESH = 5.0  # seconds between rebuilds without an event
DEBOUNCE = 0.02  # gather a burst of events into one rebuild
# A rebuild right after an event, then once more: a start's last steps (state
# written, veths up) may land just after the event that announced it.
SETTLE = 0.4

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Keeper:
    def __init__(self) -> None:
        self.viewers: dict[object, Send] = {}
        self.graph: dict[str, Any] | None = None
        self.version = 0
        self.seq = 0  # highest engine event seq seen
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.lock = asyncio.Lock()
        self.prev_counters: dict[str, Any] | None = None
        self.last_rates: dict[str, Any] = {}
        self.samples = 0  # counter samples taken (tests check the sampler stops)
        # Timers of the loop (monotonic seconds).
        self.next_rate = self.next_refresh = 0.0
        self.settle_at: float | None = None

    # -- viewers ------------------------------------------------------------------------
    async def join(self, key: object, send: Send) -> dict[str, Any]:
        """Register a viewer; returns the snapshot message it starts from."""
        async with self.lock:
            if self.graph is None or not self.viewers:
                await self._rebuild_locked(broadcast=False)
            self.viewers[key] = send
            if self.task is None or self.task.done():
                self.task = asyncio.create_task(self._run())
            assert self.graph is not None
            return {
                "type": "snapshot",
                "version": self.version,
                "graph": self.graph,
                "rates": self.last_rates,
            }

    async def leave(self, key: object) -> None:
        self.viewers.pop(key, None)
        if not self.viewers and self.task is not None:
            self.task.cancel()
            self.task = None
            # Nobody watches: the next viewer starts from a fresh graph and counters.
            self.graph, self.prev_counters, self.last_rates = None, None, {}

    @property
    def sampling(self) -> bool:
        return self.task is not None and not self.task.done()

    def poke(self, ev: dict[str, Any]) -> None:
        """An engine event arrived (each viewer's consumer forwards the same one)."""
        seq = int(ev.get("seq") or 0)
        if seq and seq <= self.seq:
            return
        self.seq = max(self.seq, seq)
        if svc.relevant(ev):
            self.wake.set()

    # -- the loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        now = time.monotonic()
        self.next_rate, self.next_refresh, self.settle_at = now, now + REFRESH, None
        while self.viewers:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad read end live updates for everyone
                log.exception("topology keeper: an update failed; trying again")
                await asyncio.sleep(1.0)

    async def _step(self) -> None:
        """Wait for an event or the next timer; then rebuild, or sample the counters."""
        now = time.monotonic()
        due = min(self.next_rate, self.next_refresh, self.settle_at or self.next_refresh)
        try:
            await asyncio.wait_for(self.wake.wait(), timeout=max(0.0, due - now))
        except TimeoutError:
            pass
        else:
            await asyncio.sleep(DEBOUNCE)
            self.wake.clear()
            await self.rebuild()
            self.settle_at = time.monotonic() + SETTLE
            return
        now = time.monotonic()
        if self.settle_at is not None and now >= self.settle_at:
            self.settle_at = None
            await self.rebuild()
        if now >= self.next_refresh:
            self.next_refresh = now + REFRESH
            await self.rebuild()
        if now >= self.next_rate:
            self.next_rate = now + RATE_INTERVAL
            await self.sample()

    async def rebuild(self) -> None:
        async with self.lock:
            await self._rebuild_locked(broadcast=True)

    async def _rebuild_locked(self, broadcast: bool) -> None:
        try:
            new = await asyncio.to_thread(svc.graph)
        except svc.EngineError as e:
            log.warning("topology: cannot build the graph: %s", e)
            return
        old = self.graph
        self.graph = new
        if old is None or not broadcast:
            if old is not None and not svc.is_empty(svc.diff(old, new)):
                self.version += 1
            return
        d = svc.diff(old, new)
        if svc.is_empty(d):
            return
        self.version += 1
        await self.broadcast({"type": "diff", "version": self.version, "diff": d})

    async def sample(self) -> None:
        g = self.graph
        if g is None:
            return
        cur = await asyncio.to_thread(svc.counters, g)
        self.samples += 1
        prev, self.prev_counters = self.prev_counters, cur
        if prev is None:
            return
        self.last_rates = svc.rates(prev, cur)
        await self.broadcast({"type": "rates", "rates": self.last_rates})

    async def broadcast(self, msg: dict[str, Any]) -> None:
        sends = list(self.viewers.values())
        if not sends:
            return
        # One slow page must not hold back the others.
        results = await asyncio.gather(
            *(asyncio.wait_for(s(msg), timeout=5) for s in sends), return_exceptions=True
        )
        for r in results:
            if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError):
                log.info("topology: a viewer missed an update: %r", r)


_keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Keeper] = weakref.WeakKeyDictionary()


def keeper() -> Keeper:
    """This event loop's keeper (one per process under Daphne; one per test loop)."""
    loop = asyncio.get_running_loop()
    k = _keepers.get(loop)
    if k is None:
        k = _keepers[loop] = Keeper()
    return k
