"""Helper process for ``exec -t``: run the runtime detached, then reap the process.

With a terminal the runtime must run ``exec --detach --console-socket`` (it
hands the pty master to us and exits at once), so nobody would be left to
collect the exec'd process's exit status. This helper marks itself a child
subreaper (PR_SET_CHILD_SUBREAPER, as conmon does) before starting the
runtime: when the runtime exits, the orphaned process is reparented to us and
``waitpid`` gives its status. A separate process, because a subreaper flag in
the caller (say the dashboard) would make it inherit every double-forked
descendant (conmon included) as a zombie.

Usage: ``python -m engine.containers.exec_monitor STATUS_FD PIDFILE -- RUNTIME ARGS...``.
Reports JSON lines on STATUS_FD: ``{"pid": N}`` once started, then
``{"exit": CODE}``; or ``{"runtime_rc": RC}`` when the runtime failed.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def _report(fd: int, **msg: int) -> None:
    os.write(fd, (json.dumps(msg) + "\n").encode())


def main(argv: list[str]) -> int:
    status_fd, pidfile = int(argv[0]), argv[1]
    cmd = argv[argv.index("--") + 1 :]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
    rc = subprocess.call(cmd, close_fds=True)
    if rc != 0:
        _report(status_fd, runtime_rc=rc)
        return 1
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        _report(status_fd, runtime_rc=254)
        return 1
    _report(status_fd, pid=pid)
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            # Not reparented to us (should not happen): exit status unknown.
            _report(status_fd, exit=255)
            return 0
        if wpid == pid:
            code = os.waitstatus_to_exitcode(status)
            _report(status_fd, exit=128 - code if code < 0 else code)
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
