"""Run transfers on a few threads (plain threads: concurrent.futures would
bring ``logging`` into every ``berth pull``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from engine.errors import EngineError

T = TypeVar("T")
R = TypeVar("R")


def run_all(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    cancel: threading.Event | None = None,
    name: str = "berth-xfer",
) -> list[R]:
    """``fn(item)`` for every item on up to ``workers`` threads, results in
    order. The first failure sets ``cancel`` (the others stop at their next
    check; no new item starts) and is raised once all threads are done, an
    engine error preferred over the cancellations it caused. Ctrl-C in the
    calling thread cancels too."""
    cancel = cancel or threading.Event()
    results: list = [None] * len(items)
    errors: list[BaseException] = []
    lock = threading.Lock()
    pending = iter(enumerate(items))

    def worker() -> None:
        while True:
            with lock:
                if cancel.is_set():
                    return
                nxt = next(pending, None)
            if nxt is None:
                return
            i, item = nxt
            try:
                results[i] = fn(item)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                with lock:
                    errors.append(e)
                cancel.set()
                return

    if workers <= 1 or len(items) <= 1:
        worker()
    else:
        threads = [
            threading.Thread(target=worker, name=f"{name}-{k}", daemon=True)
            for k in range(min(workers, len(items)))
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException:
            cancel.set()
            for t in threads:
                t.join()
            raise
    if errors:
        raise next((e for e in errors if isinstance(e, EngineError)), errors[0])
    return results
