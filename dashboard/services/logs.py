"""Reading a container's log file in bounded pieces, for the logs stream and download.

The file is conmon's k8s-file format, one record a line:
``<RFC3339Nano> <stdout|stderr> <P|F> <text>`` (P = partial, joined with the next).
A ``LogTail`` never holds more than one chunk of it: ``tail=N`` finds the start of the
last N lines by reading backwards from the end, then everything is read forwards a
chunk at a time. A file that shrinks was rotated by conmon: reading starts again
at its top.
"""

from __future__ import annotations

import os
from typing import Any

from engine.containers.logs import parse_ts

from . import containers

CHUNK = 64 * 1024
# Open tails, for tests and diagnostics: a closed page must leave none behind.
_OPEN: set[LogTail] = set()


def open_count() -> int:
    return len(_OPEN)


def _tail_offset(f, size: int, n: int) -> int:
    """Offset of the first of the last ``n`` lines (the file ends with a newline)."""
    if n <= 0:
        return size
    pos = size
    seen = 0
    while pos > 0:
        step = min(CHUNK, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        end = len(block)
        # The last byte is the file's final newline: it ends line 1, not starts one.
        if pos + end == size and block.endswith(b"\n"):
            end -= 1
        while True:
            i = block.rfind(b"\n", 0, end)
            if i < 0:
                break
            seen += 1
            if seen == n:
                return pos + i + 1
            end = i
    return 0


class LogTail:
    """Forward reader of one log file from a starting point (see the module doc).

    ``read()`` returns ``(lines, nbytes)``: lines as ``[time, stream, text]`` lists
    (text without its newline) of complete records only, and the bytes consumed."""

    def __init__(
        self,
        path: str,
        *,
        tail: int | None = None,
        since: float = 0.0,
        streams: tuple[str, ...] = ("stdout", "stderr"),
    ) -> None:
        self.path = path
        self.since = since
        self.streams = set(streams)
        self.f = None
        self.pos = 0
        self.buf = b""
        self.partial: dict[str, bytes] = {}
        self._open(tail)
        _OPEN.add(self)

    def _open(self, tail: int | None) -> None:
        try:
            self.f = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except FileNotFoundError:
            self.f = None
            return
        size = os.fstat(self.f.fileno()).st_size
        self.pos = _tail_offset(self.f, size, tail) if tail is not None else 0

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        _OPEN.discard(self)

    def __enter__(self) -> LogTail:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def read(self, max_bytes: int = CHUNK) -> tuple[list[list[str]], int]:
        if self.f is None:
            if not os.path.exists(self.path):
                return [], 0
            self._open(None)
            if self.f is None:
                return [], 0
        size = os.fstat(self.f.fileno()).st_size
        try:
            cur = os.stat(self.path)
            if cur.st_ino != os.fstat(self.f.fileno()).st_ino:
                size = -1  # replaced by a new file: reopen below
        except FileNotFoundError:
            pass
        if size < self.pos:  # truncated (rotation) or replaced: from the top again
            if size < 0:
                self.f.close()
                self.f = open(self.path, "rb")  # noqa: SIM115
            self.pos, self.buf, self.partial = 0, b"", {}
            size = os.fstat(self.f.fileno()).st_size
        if size == self.pos:
            return [], 0
        self.f.seek(self.pos)
        chunk = self.f.read(min(max_bytes, size - self.pos))
        self.pos += len(chunk)
        data = self.buf + chunk
        cut = data.rfind(b"\n") + 1
        self.buf = data[cut:]
        out = []
        for raw in data[:cut].split(b"\n")[:-1]:
            ln = self._parse(raw)
            if ln is not None:
                out.append(ln)
        return out, len(chunk)

    def _parse(self, raw: bytes) -> list[str] | None:
        parts = raw.split(b" ", 3)
        if len(parts) < 4:
            if len(parts) == 3:  # an empty line: "<ts> <stream> F"
                parts.append(b"")
            else:
                return None
        ts, stream, tag, text = parts
        key = stream.decode(errors="replace")
        if tag == b"P":
            self.partial[key] = self.partial.get(key, b"") + text
            return None
        text = self.partial.pop(key, b"") + text
        if key not in self.streams:
            return None
        t = ts.decode(errors="replace")
        if self.since and parse_ts(t) < self.since:
            return None
        return [t, key, text.decode(errors="replace")]


def open_tail(
    user: Any,
    ref: str,
    *,
    tail: int | None = None,
    since: float = 0.0,
    streams: tuple[str, ...] = ("stdout", "stderr"),
) -> tuple[str, LogTail]:
    """(container ID, a LogTail on its log file). NotFound for an unknown container."""
    cid, path = containers.log_path(user, ref)
    return cid, LogTail(path, tail=tail, since=since, streams=streams)


def download_lines(
    user: Any,
    ref: str,
    *,
    timestamps: bool = True,
    streams: tuple[str, ...] = ("stdout", "stderr"),
):
    """The whole log as text lines, produced a chunk at a time (for a download)."""
    _, t = open_tail(user, ref, streams=streams)

    def gen():
        with t:
            while True:
                lines, n = t.read(256 * 1024)
                if not n:
                    return
                yield "".join(
                    (f"{ts} {s} {text}\n" if timestamps else f"{text}\n") for ts, s, text in lines
                )

    return gen()


def parse_since(text: str) -> float:
    """The logs form's "since": a duration back from now (10m, 1h30m, 45s), a Unix
    time, or an ISO date/time. 0 when empty."""
    import time
    from datetime import datetime

    from engine.containers.options import parse_duration
    from engine.errors import InvalidArgument

    text = text.strip()
    if not text:
        return 0.0
    try:
        return (
            float(text)
            if text.replace(".", "", 1).isdigit() and len(text) > 6
            else (time.time() - parse_duration(text))
        )
    except InvalidArgument:
        pass
    try:
        d = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(
            f"invalid since {text!r}: use a duration (10m, 1h), a Unix time or an ISO date"
        ) from None
    return d.timestamp()
