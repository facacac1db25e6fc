"""A terminal in a container: `exec -it` under a pty this process owns.

The exec runs in a helper process (``python -m dashboard.services.terminal``) whose
controlling terminal is the slave side of a pty made here; the dashboard reads and
writes the master side. So:
- bytes flow between the master and the websocket, nothing in between buffers them;
- a resize is TIOCSWINSZ on the master: the kernel signals SIGWINCH to the helper,
  whose exec relay (engine/containers/exec.py) passes the size on to the container's
  own pty -- the same path as `berth exec -it` in a real terminal;
- closing the master hangs the helper up (SIGHUP), its end of the container's pty
  closes and the shell in the container is hung up too: closing the page ends all of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

from . import actor_of

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CMD = ("/bin/sh",)
# Open terminals, for tests and diagnostics.
_OPEN: set[Terminal] = set()


def open_count() -> int:
    return len(_OPEN)


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """One exec session. ``master`` is non-blocking: read() gives b"" when nothing is
    waiting and None once the session has ended."""

    def __init__(
        self,
        user: Any,
        ref: str,
        cmd: tuple[str, ...] = DEFAULT_CMD,
        rows: int = 24,
        cols: int = 80,
    ) -> None:
        rows, cols = _check_size(rows, cols)
        master, slave = pty.openpty()
        _set_size(slave, rows, cols)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dashboard.services.terminal", actor_of(user), ref, *cmd],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,  # a session of its own: the pty becomes its terminal
                cwd=REPO,
                close_fds=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self.exit_code: int | None = None
        _OPEN.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self, n: int = 65536) -> bytes | None:
        try:
            data = os.read(self.master, n)
        except BlockingIOError:
            return b""
        except OSError:  # EIO: the helper (last user of the slave) is gone
            return None
        return data or None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                import select

                select.select([], [self.master], [], 1.0)

    def resize(self, rows: int, cols: int) -> None:
        rows, cols = _check_size(rows, cols)
        _set_size(self.master, rows, cols)

    def finished(self) -> int | None:
        """The helper's exit code once it has exited (the exec's), else None."""
        if self.exit_code is None and self.proc.poll() is not None:
            self.exit_code = self.proc.returncode
        return self.exit_code

    def close(self) -> None:
        """Hang up and make sure the helper is gone (reaped)."""
        if self.master >= 0:
            os.close(self.master)  # SIGHUP to the helper's session
            self.master = -1
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGHUP)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.finished()
        _OPEN.discard(self)


def _check_size(rows: Any, cols: Any) -> tuple[int, int]:
    try:
        r, c = int(rows), int(cols)
    except (TypeError, ValueError):
        raise ValueError(
            f"terminal size {rows!r}x{cols!r}: rows and columns must be numbers"
        ) from None
    if not (1 <= r <= 1000 and 1 <= c <= 1000):
        raise ValueError(f"terminal size {r}x{c}: rows and columns must be 1..1000")
    return r, c


def main(argv: list[str]) -> int:
    """The helper: make stdin (the pty slave) our controlling terminal, then exec -it."""
    if len(argv) < 3:
        print(
            "usage: python -m dashboard.services.terminal ACTOR CONTAINER CMD...", file=sys.stderr
        )
        return 2
    actor, ref, *cmd = argv
    with contextlib.suppress(OSError):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    from engine.api import Engine
    from engine.config import EngineConfig
    from engine.errors import EngineError

    eng = Engine(EngineConfig.from_env(), actor=actor)
    try:
        return eng.exec_container(ref, cmd, interactive=True, tty=True)
    except EngineError as e:
        print(f"berth: {e}\r", file=sys.stderr)
        return getattr(e, "exit_code", 126)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
