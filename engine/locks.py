"""File locks (flock) under the run directory.

flock locks die with the process that holds them, so a CLI killed with -9
never leaves a lock held; the lock *file* may stay, which is harmless.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import Conflict


@contextmanager
def file_lock(path: Path, *, shared: bool = False, timeout: float | None = None) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing) for the duration of the block.

    ``timeout=None`` waits forever; otherwise raise Conflict after ``timeout`` seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if timeout is None:
            fcntl.flock(fd, op)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, op | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise Conflict(
                            f"lock {path} is busy after {timeout}s", obj=str(path)
                        ) from None
                    time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing releases the flock
