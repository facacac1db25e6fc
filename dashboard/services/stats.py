"""Live resource numbers of containers: one sampler per watched container, shared.

A page watching a container's stats subscribes here with a queue. The first watcher
of a container starts its sampler (an asyncio task reading the cgroup once a
second); every later watcher gets the same samples; when the last one leaves the
sampler stops. So ten open pages cost one read a second, not ten.

This lives in the serving process (Daphne runs one): samples go straight to the
watchers' queues, a full queue (a stalled page) drops its oldest sample rather than
growing.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from . import engine_for

INTERVAL = 1.0


def point(st: dict) -> dict:
    """The chart numbers of one Docker-shaped stats reading (with its precpu)."""
    from engine.containers.stats import ZERO_TIME, cpu_percent, memory_usage

    running = st["read"] != ZERO_TIME
    mem = st.get("memory_stats") or {}
    rx = tx = rd = wr = 0
    for n in (st.get("networks") or {}).values():
        rx += n.get("rx_bytes", 0)
        tx += n.get("tx_bytes", 0)
    for e in (st.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        if e["op"].lower() == "read":
            rd += e["value"]
        elif e["op"].lower() == "write":
            wr += e["value"]
    return {
        "running": running,
        "cpu": round(cpu_percent(st), 3) if running else 0.0,
        "mem": memory_usage(mem) if running else 0,
        "mem_limit": mem.get("limit", 0) if running else 0,
        "rx": rx,
        "tx": tx,
        "rd": rd,
        "wr": wr,
        "pids": (st.get("pids_stats") or {}).get("current", 0),
    }


def sample(user: Any, ref: str, prev: dict | None = None) -> tuple[dict, dict]:
    """(chart point, raw reading): pass the raw reading back as ``prev`` next time."""
    st = engine_for(user).container_stats(ref, prev)
    return point(st), st


@dataclass
class Sampler:
    cid: str
    watchers: set[asyncio.Queue] = field(default_factory=set)
    task: asyncio.Task | None = None
    samples: int = 0


_SAMPLERS: dict[str, Sampler] = {}


def samplers() -> dict[str, Sampler]:
    """The running samplers by container ID (tests look here)."""
    return _SAMPLERS


def subscribe(cid: str, maxsize: int = 10) -> asyncio.Queue:
    """A queue that gets ``{"t": unix time, ...point}`` dicts (or ``{"error": text}``)
    once a second until unsubscribe(); starts the container's sampler if needed."""
    q: asyncio.Queue = asyncio.Queue(maxsize=maxsize)
    s = _SAMPLERS.get(cid)
    if s is None:
        s = _SAMPLERS[cid] = Sampler(cid)
        s.task = asyncio.get_running_loop().create_task(_run(s), name=f"stats-{cid[:12]}")
    s.watchers.add(q)
    return q


def unsubscribe(cid: str, q: asyncio.Queue) -> None:
    s = _SAMPLERS.get(cid)
    if s is None:
        return
    s.watchers.discard(q)
    if not s.watchers:
        del _SAMPLERS[cid]
        if s.task is not None:
            s.task.cancel()


def _deliver(s: Sampler, msg: dict) -> None:
    for q in list(s.watchers):
        if q.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                q.get_nowait()
        q.put_nowait(msg)


async def _run(s: Sampler) -> None:
    import time

    loop = asyncio.get_running_loop()
    prev: dict | None = None
    while True:
        started = loop.time()
        try:
            pt, prev = await asyncio.to_thread(sample, None, s.cid, prev)
            msg = {"t": time.time(), **pt}
        except Exception as e:  # gone, or a read failed: say so, keep trying
            msg = {"t": time.time(), "error": str(e)}
            prev = None
        s.samples += 1
        _deliver(s, msg)
        await asyncio.sleep(max(0.0, INTERVAL - (loop.time() - started)))
