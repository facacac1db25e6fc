"""Reading conmon's k8s-file logs: ``<RFC3339Nano> <stdout|stderr> <P|F> <text>``.

conmon writes both streams to one file in arrival order, so "interleaved by
timestamp" is simply file order. Partial lines (P) are joined with the next
line. Rotation by conmon (--log-size-max) replaces the file; a follower that
sees the file shrink starts again from the top. With max-file > 1 the log keeper
(engine/containers/logkeeper.py) keeps the replaced files as ctr.log.1, .2, ...
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass
class LogLine:
    time: str  # RFC3339Nano as written by conmon
    stream: str  # stdout | stderr
    data: bytes  # with its trailing newline when the line was complete

    def timestamp(self) -> float:
        return parse_ts(self.time)


def parse_ts(text: str) -> float:
    # Python's fromisoformat takes only microseconds: cut the nanoseconds.
    date, _, rest = text.partition(".")
    frac = rest[:6]
    zone = rest[9:] if len(rest) > 9 else ""
    if zone in ("", "Z"):
        zone = "+00:00"
    try:
        return datetime.fromisoformat(f"{date}.{frac}{zone}").timestamp()
    except ValueError:
        return 0.0


def _parse(raw: bytes, partial: dict) -> LogLine | None:
    try:
        ts, stream, tag, text = raw.split(b" ", 3)
    except ValueError:
        return None
    text = text[:-1] if text.endswith(b"\n") else text
    key = stream.decode()
    if tag == b"P":
        partial[key] = partial.get(key, b"") + text
        return None
    data = partial.pop(key, b"") + text + b"\n"
    return LogLine(ts.decode(), key, data)


def read(
    path: Path, *, tail: int | None = None, since: float = 0, until: float = 0
) -> list[LogLine]:
    out: deque[LogLine] = deque(maxlen=tail if tail and tail > 0 else None)
    if tail == 0:
        return []
    partial: dict = {}
    from engine.containers.logkeeper import files_in_order

    # Older files kept for --log-opt max-file (ctr.log.2, ctr.log.1), then the current one.
    for p in files_in_order(path):
        try:
            f = open(p, "rb")
        except FileNotFoundError:
            continue
        with f:
            for raw in f:
                ln = _parse(raw, partial)
                if ln is None:
                    continue
                if since or until:
                    t = ln.timestamp()
                    if (since and t < since) or (until and t > until):
                        continue
                out.append(ln)
    return list(out)


def follow(
    path: Path,
    *,
    tail: int | None,
    since: float,
    until: float,
    running: Callable[[], bool],
    poll: float = 0.05,
) -> Iterator[LogLine]:
    """The backlog, then new lines until the container has exited (and the file is drained)."""
    yield from read(path, tail=tail, since=since, until=until)
    try:
        pos = path.stat().st_size
    except FileNotFoundError:
        pos = 0
    partial: dict = {}
    buf = b""
    while True:
        alive = running()
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = 0
        if size < pos:  # rotated/truncated by conmon
            pos, buf = 0, b""
        if size > pos:
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read(size - pos)
            pos += len(chunk)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                ln = _parse(raw + b"\n", partial)
                if ln is None:
                    continue
                t = ln.timestamp()
                if until and t > until:
                    return
                if since and t < since:
                    continue
                yield ln
            continue
        if not alive:
            return
        time.sleep(poll)
