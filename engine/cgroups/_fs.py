"""File access shared by the cgroup drivers: reads, writes and errors with context.

cgroupfs differs from a plain directory in two calls only: ``mkdir`` makes the
control files appear and ``rmdir`` removes a directory that still holds them
(or fails with EBUSY while processes or children remain). Those two go through
``OPS`` so the unit tests can put a fake kernel behind a tree in tmp.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engine.errors import (
    Conflict,
    EngineError,
    HostNotReady,
    InvalidArgument,
    InvalidState,
    NotFound,
    Unsupported,
)

# Reads of a file that vanished with its cgroup fail with ENODEV as well as ENOENT.
_GONE = (errno.ENOENT, errno.ENODEV)

# What the kernel reports as "no limit" for v1 page counters (PAGE_COUNTER_MAX * PAGE_SIZE,
# rounded down to a page); anything this large means unlimited.
V1_UNLIMITED = 1 << 62


class FsOps:
    """The calls whose semantics on cgroupfs a plain directory cannot reproduce."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)


OPS = FsOps()


def wrap(err: OSError, action: str, obj: str) -> EngineError:
    """Turn an OSError from cgroupfs into the engine error that says what it means."""
    code = err.errno
    msg = f"{action}: {err.strerror or err}"
    cls: type[EngineError]
    if code in _GONE or code == errno.ESRCH:
        cls = NotFound
    elif code in (errno.EINVAL, errno.ERANGE):
        cls = InvalidArgument
    elif code in (errno.EBUSY, errno.EEXIST, errno.ENOTEMPTY):
        cls = Conflict
    elif code == errno.ENOSPC:
        # cpuset with no cpus/mems, or the v2 "no internal processes" rule.
        cls = InvalidState
    elif code in (errno.EOPNOTSUPP, errno.ENOTSUP):
        cls = Unsupported
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        cls = HostNotReady
    else:
        cls = EngineError
    return cls(msg, obj=obj, errno=code)


def read_text(path: Path, obj: str = "") -> str | None:
    """The file's text, or None when it does not exist (controller absent, cgroup gone)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError as err:
        if err.errno in _GONE:
            return None
        raise wrap(err, f"read {path}", obj or str(path)) from err


def read_int(path: Path, obj: str = "") -> int | None:
    """A single number; None when the file is missing, empty or says "max"."""
    text = read_text(path, obj)
    if text is None:
        return None
    text = text.strip()
    if not text or text == "max":
        return None
    return int(text)


def read_kv(path: Path, obj: str = "") -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in (read_text(path, obj) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def read_pids(path: Path, obj: str = "") -> list[int]:
    return [int(x) for x in (read_text(path, obj) or "").split()]


def write(path: Path, value: str | int, obj: str) -> None:
    """Write one value with one write(2): the kernel parses each write on its own.

    No O_CREAT: on cgroupfs a missing file means a missing controller, and a
    fake tree must not hide that by growing files.
    """
    data = str(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in _GONE and path.parent.is_dir():
            raise Unsupported(
                f"{path.name} is not available (controller not enabled or kernel too old)",
                obj=obj,
                errno=err.errno,
            ) from err
        raise wrap(err, f"open {path}", obj) from err
    try:
        os.write(fd, data)
    except OSError as err:
        raise wrap(err, f"write {data.decode()!r} to {path}", obj) from err
    finally:
        os.close(fd)


def subdirs_bottom_up(top: Path) -> list[Path]:
    """Every directory under ``top`` (inclusive), children before their parents."""
    out: list[Path] = []
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        out.append(Path(dirpath))
    return out
