"""Client side of conmon's attach socket (and its ctl fifo for tty resizes).

conmon's attach socket is a SOCK_SEQPACKET unix socket: each message from
conmon starts with one byte naming the stream (2 = stdout, 3 = stderr);
what we write goes to the container's stdin. ``shutdown(SHUT_WR)`` closes the
container's stdin.
"""

from __future__ import annotations

import os
import select
import socket
import sys
from pathlib import Path

STDOUT, STDERR = 2, 3
DETACH_KEYS = b"\x10\x11"  # Ctrl-P Ctrl-Q


class Detached(Exception):
    pass


def connect(bundle: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # Through /proc/self/fd so a long bundle path never hits sun_path's 108 bytes.
    fd = os.open(bundle, os.O_PATH)
    try:
        s.connect(f"/proc/self/fd/{fd}/attach")
    finally:
        os.close(fd)
    return s


def resize(bundle: Path, rows: int, cols: int) -> None:
    try:
        fd = os.open(bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, f"1 {rows} {cols}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def relay(
    sock: socket.socket,
    *,
    stdin: int | None,
    stdout: int = 1,
    stderr: int = 2,
    detach_keys: bytes = DETACH_KEYS,
    tty: bool = False,
) -> None:
    """Copy between our stdio and the container until it closes (or we detach)."""
    fds = [sock.fileno()] + ([stdin] if stdin is not None else [])
    pending = b""
    while True:
        r, _, _ = select.select(fds, [], [])
        if sock.fileno() in r:
            try:
                msg = sock.recv(8193)
            except ConnectionResetError:
                msg = b""
            if not msg:
                return
            out = stderr if msg[0] == STDERR else stdout
            _write_all(out, msg[1:])
        if stdin is not None and stdin in r:
            data = os.read(stdin, 8192)
            if not data:
                fds.remove(stdin)
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                stdin = None
                continue
            if tty and detach_keys:
                data = pending + data
                pending = b""
                idx = data.find(detach_keys)
                if idx >= 0:
                    if idx:
                        sock.send(data[:idx])
                    raise Detached()
                if data.endswith(detach_keys[:1]):
                    pending, data = data[-1:], data[:-1]
            if data:
                try:
                    sock.sendall(data)
                except OSError:
                    pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


def terminal_size(fd: int = 0) -> tuple[int, int] | None:
    try:
        sz = os.get_terminal_size(fd)
        return sz.lines, sz.columns
    except OSError:
        return None


def is_tty(fd: int = 0) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


__all__ = ["connect", "relay", "resize", "Detached", "terminal_size", "is_tty", "sys"]
