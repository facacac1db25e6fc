"""Progress of a pull or push as Docker's JSON messages (its ``/images/create``
stream): ``{"status": "Downloading", "id": "3f4d90098f5b", "progressDetail":
{"current": 1048576, "total": 2230785}, "progress": "[=====>    ]  1.049MB/2.231MB"}``.

The CLI renders them as ``docker pull`` does; the dashboard can forward them
as they are. Transfers run in worker threads: ``Progress`` serialises the
calls (the callback never runs in two threads at once), throttles byte
counts per layer, and a callback that raises is switched off rather than
failing the pull.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from engine.units import human_size

Callback = Callable[[dict], object]
BAR_WIDTH = 50


def short_id(digest: str) -> str:
    """Docker's layer ID in progress lines: 12 hex digits of the digest."""
    return digest.partition(":")[2][:12] or digest[:12]


def bar(current: int, total: int) -> str:
    """Docker's JSONProgress.String(): ``[====>     ]  1.2MB/2.3MB``."""
    if total <= 0:
        return f"{human_size(current):>8}"
    filled = min(BAR_WIDTH, int(current * BAR_WIDTH / total))
    arrow = ">" if filled < BAR_WIDTH else ""
    box = "[" + "=" * filled + arrow + " " * (BAR_WIDTH - filled - len(arrow)) + "] "
    return f"{box}{human_size(current):>8}/{human_size(total)}"


class Progress:
    def __init__(self, callback: Callback | None, interval: float = 0.1):
        self._callback = callback
        self._lock = threading.Lock()
        self._interval = interval
        self._last: dict[str, float] = {}

    def _send(self, msg: dict) -> None:
        if self._callback is None:
            return
        with self._lock:
            if self._callback is None:
                return
            try:
                self._callback(msg)
            except Exception:
                self._callback = None  # a broken listener must not break the transfer

    def status(self, text: str, id: str = "") -> None:
        msg: dict = {"status": text}
        if id:
            msg["id"] = id
        self._send(msg)

    def layer(self, id: str, text: str) -> None:
        self._send({"status": text, "progressDetail": {}, "id": id})

    def bytes(self, id: str, text: str, current: int, total: int, *, force: bool = False) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if not force and current < total and now - self._last.get(id, 0.0) < self._interval:
            return
        self._last[id] = now
        self._send(
            {
                "status": text,
                "progressDetail": {"current": current, "total": total},
                "progress": bar(current, total),
                "id": id,
            }
        )
