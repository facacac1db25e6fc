"""``exec``: run another process in a running container through the OCI runtime.

The process inherits what the container's own process got (its bundle's
``config.json`` ``process``: env, capabilities, rlimits, noNewPrivileges, user,
cwd), with ``-e``/``-u``/``-w``/``--privileged`` applied on top, and is started
with ``<runtime> exec --process process.json``. No AppArmor profile is set.

Without a terminal the runtime runs in the foreground with our stdio and its
exit status is the process's. With a terminal the runtime hands the pty master
over a console socket (SCM_RIGHTS) and must detach; a small subreaper helper
(:mod:`engine.containers.exec_monitor`) then collects the exit status.

Docker's exit codes for a command that cannot start: 126 (not executable),
127 (not found). We check the command inside the container's root before
asking the runtime (a clear message, nothing half-started) and also map the
runtime's own error when it still fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from engine.containers import lifecycle
from engine.containers.options import merge_env
from engine.containers.records import Container, Paths
from engine.errors import EngineError, InvalidArgument, InvalidState, Unsupported
from engine.runtime.oci import OCIRuntime, pid_alive

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ExecOptions:
    cmd: list[str]
    interactive: bool = False
    tty: bool = False
    detach: bool = False
    env: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    privileged: bool = False


class ExecFailed(EngineError):
    """The command could not be started; ``exit_code`` is Docker's (126/127)."""

    def __init__(self, message: str, exit_code: int, obj: str | None = None):
        super().__init__(message, obj=obj)
        self.exit_code = exit_code


def running_container(eng, ref: str) -> Container:
    c = eng.get_container(ref)
    if c.state == "paused":
        raise InvalidState(
            f"container {c.name} is paused, unpause the container before exec", obj=c.name
        )
    if c.state != "running" or not pid_alive(c.pid):
        raise InvalidState(f"container {c.name} is not running", obj=c.name)
    return c


def container_root(eng, c: Container) -> str:
    """The container's own view of its filesystem (volumes and tmpfs included).

    ``/proc/PID/root`` walks the container's mount namespace; safepath resolves
    every name inside it, so links in the container cannot lead to the host.
    """
    root = f"/proc/{c.pid}/root"
    return root if os.path.isdir(root) else str(Paths(eng.config, c.id).merged)


# -- process.json -------------------------------------------------------------------------


def build_process(eng, c: Container, o: ExecOptions, root: str) -> dict:
    """The OCI ``process`` for the exec, derived from the container's own."""
    from engine.runtime import caps as capsmod
    from engine.runtime.users import resolve_user

    bundle_cfg = Paths(eng.config, c.id).bundle / "config.json"
    try:
        base = json.loads(bundle_cfg.read_text())["process"]
    except (OSError, ValueError, KeyError):
        raise InvalidState(
            f"container {c.name} has no runtime bundle: is it running?", obj=c.name
        ) from None
    if not o.cmd:
        raise InvalidArgument("exec needs a command to run")
    proc: dict = {
        "terminal": o.tty,
        "args": list(o.cmd),
        "env": merge_env(base.get("env") or [], o.env),
        "cwd": o.workdir or base.get("cwd") or "/",
        "user": dict(base.get("user") or {"uid": 0, "gid": 0}),
        "capabilities": dict(base.get("capabilities") or {}),
        "rlimits": list(base.get("rlimits") or []),
        "noNewPrivileges": bool(base.get("noNewPrivileges")),
    }
    if "oomScoreAdj" in base:
        proc["oomScoreAdj"] = base["oomScoreAdj"]
    if not proc["cwd"].startswith("/"):
        raise InvalidArgument(
            f"the working directory {proc['cwd']!r} is invalid, it needs to be an absolute path"
        )
    if o.tty and not any(e.startswith("TERM=") for e in proc["env"]):
        proc["env"].append("TERM=xterm")
    if o.user:
        uid, gid, groups = resolve_user(root, o.user)
        proc["user"] = {"uid": uid, "gid": gid, "additionalGids": groups}
    if o.privileged:
        # "All" is the host's bounding set (DESIGN.md), as for run --privileged.
        every = capsmod.resolve_caps(privileged=True)
        proc["capabilities"] = {"bounding": every, "effective": every, "permitted": every}
    return proc


# -- the command must exist and be executable (Docker's 126/127) ---------------------------


def check_command(root: str, proc: dict) -> None:
    from engine.safepath import stat_in_root

    cmd = proc["args"][0]
    what = f'exec failed: unable to start container process: exec: "{cmd}"'

    def probe(path: str) -> os.stat_result | None:
        try:
            return stat_in_root(root, path)
        except EngineError:
            return None

    if "/" in cmd:
        path = cmd if cmd.startswith("/") else posixpath.join(proc["cwd"], cmd)
        st = probe(path)
        if st is None:
            raise ExecFailed(f"{what}: stat {cmd}: no such file or directory", 127, obj=cmd)
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
            raise ExecFailed(f"{what}: permission denied", 126, obj=cmd)
        return
    env_path = next((e[5:] for e in proc["env"] if e.startswith("PATH=")), DEFAULT_PATH)
    for d in env_path.split(":"):
        st = probe(
            posixpath.join(d or ".", cmd)
            if d.startswith("/")
            else posixpath.join(proc["cwd"], d, cmd)
        )
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return
    raise ExecFailed(f"{what}: executable file not found in $PATH", 127, obj=cmd)


def _runtime_error(log: Path) -> str:
    """The runtime's last error from its JSON log (runc and crun both write one)."""
    msg = ""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    msg = str(entry.get("msg", ""))
    return msg


def _raise_runtime_error(rt: OCIRuntime, msg: str, rc: int) -> None:
    low = msg.lower()
    if "not found" in low or "no such file" in low:
        raise ExecFailed(msg, 127)
    if "permission denied" in low or "operation not permitted" in low or "is a directory" in low:
        raise ExecFailed(msg, 126)
    raise EngineError(f"{rt.name} exec failed: {msg or f'exit status {rc}'}")


def _runtime_cmd(rt: OCIRuntime, log: Path) -> list[str]:
    # Both runtimes log their error as JSON; the flag spelling differs.
    logflag = [f"--log=file:{log}"] if rt.name == "crun" else ["--log", str(log)]
    return [rt.path, f"--root={rt.state_root}", *logflag, "--log-format=json", "exec"]


# -- running it ----------------------------------------------------------------------------


def run_exec(
    eng, c: Container, o: ExecOptions, stdin_fd: int = 0, stdout_fd: int = 1, stderr_fd: int = 2
) -> int:
    """Run the exec; returns its exit code (0 at once with ``detach``)."""
    if o.detach and o.tty:
        raise Unsupported(
            "exec -d with -t is not supported: the terminal would have no reader; drop -t"
        )
    root = container_root(eng, c)
    proc = build_process(eng, c, o, root)
    if o.tty:
        size = _term_size(stdin_fd if o.interactive else stdout_fd)
        if size:
            proc["consoleSize"] = {"height": size[0], "width": size[1]}
    check_command(root, proc)
    rt = lifecycle._runtime(eng, c)
    exec_id = secrets.token_hex(32)
    attrs = {"name": c.name, "image": c.image_ref, "execID": exec_id, "command": " ".join(o.cmd)}
    eng.emit("container", "exec_create", c.id, **attrs)
    tmp = Path(
        tempfile.mkdtemp(prefix="berth-exec-")
    )  # short: the console socket path must fit sun_path
    try:
        pfile = tmp / "process.json"
        pfile.write_text(json.dumps(proc))
        base = _runtime_cmd(rt, tmp / "runtime.log")
        eng.emit("container", "exec_start", c.id, **attrs)
        if o.tty:
            code = _run_tty(rt, base, pfile, tmp, c.id, o, stdin_fd, stdout_fd)
        else:
            code = _run_plain(rt, base, pfile, tmp, c.id, o, stdin_fd, stdout_fd, stderr_fd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not o.detach:
        eng.emit("container", "exec_die", c.id, exitCode=str(code), **attrs)
    return code


def _run_plain(
    rt: OCIRuntime, base: list[str], pfile: Path, tmp: Path, cid: str, o: ExecOptions,
    stdin_fd: int, stdout_fd: int, stderr_fd: int,
) -> int:  # fmt: skip
    args = [*base, "--process", str(pfile), *(["--detach"] if o.detach else []), cid]
    devnull = subprocess.DEVNULL
    if o.detach:
        stdio = dict(stdin=devnull, stdout=devnull, stderr=devnull)
    else:
        stdio = dict(
            stdin=stdin_fd if o.interactive else devnull, stdout=stdout_fd, stderr=stderr_fd
        )
    p = subprocess.Popen(args, **stdio)  # type: ignore[call-overload]
    while True:
        try:
            rc = p.wait()
            break
        except KeyboardInterrupt:
            continue  # the runtime got the SIGINT too and forwards it to the process
    if rc != 0:
        msg = _runtime_error(tmp / "runtime.log")
        if msg:  # the runtime failed (the process itself never logs here)
            _raise_runtime_error(rt, msg, rc)
    return rc


def _run_tty(
    rt: OCIRuntime,
    base: list[str],
    pfile: Path,
    tmp: Path,
    cid: str,
    o: ExecOptions,
    stdin_fd: int,
    stdout_fd: int,
) -> int:
    sock_path = tmp / "console.sock"
    pidfile = tmp / "exec.pid"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(1)
    status_r, status_w = os.pipe()
    rt_args = [
        *base, "--process", str(pfile), "--detach", "--tty", f"--console-socket={sock_path}",
        f"--pid-file={pidfile}", cid,
    ]  # fmt: skip
    with open(tmp / "monitor.err", "wb") as err:
        helper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.containers.exec_monitor",
                str(status_w),
                str(pidfile),
                "--",
                *rt_args,
            ],
            pass_fds=[status_w],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
    os.close(status_w)
    status = _StatusReader(status_r)
    master = -1
    try:
        # The master arrives on the socket, or the helper reports a failure first.
        while master < 0:
            r, _, _ = select.select([listener, status_r], [], [])
            if listener in r:
                conn, _ = listener.accept()
                with conn:
                    _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
                if fds:
                    master = fds[0]
            elif status_r in r:
                msg = status.read()
                if msg is None or "runtime_rc" in msg:
                    helper.wait()
                    rc = (msg or {}).get("runtime_rc", 255)
                    _raise_runtime_error(rt, _runtime_error(tmp / "runtime.log"), rc)
        return _relay_pty(master, status, o, stdin_fd, stdout_fd)
    finally:
        if master >= 0:
            os.close(master)
        listener.close()
        os.close(status_r)
        with contextlib.suppress(subprocess.TimeoutExpired):
            helper.wait(timeout=5)


class _StatusReader:
    """JSON lines from the helper's status pipe."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""
        self.closed = False

    def read(self) -> dict | None:
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def _term_size(fd: int) -> tuple[int, int] | None:
    try:
        sz = os.get_terminal_size(fd)
        return sz.lines, sz.columns
    except OSError:
        return None


def _set_size(master: int, size: tuple[int, int] | None) -> None:
    import fcntl
    import struct
    import termios

    if size:
        with contextlib.suppress(OSError):
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


def _relay_pty(
    master: int, status: _StatusReader, o: ExecOptions, stdin_fd: int, stdout_fd: int
) -> int:
    """Copy between our stdio and the pty until the process is gone; its exit code."""
    import termios
    import tty as ttymod

    size_fd = stdin_fd if o.interactive else stdout_fd
    _set_size(master, _term_size(size_fd))
    old_attrs = None
    if o.interactive and os.isatty(stdin_fd):
        old_attrs = termios.tcgetattr(stdin_fd)
        ttymod.setraw(stdin_fd)
    old_handler = None
    if threading.current_thread() is threading.main_thread() and os.isatty(size_fd):
        old_handler = signal.signal(
            signal.SIGWINCH, lambda *_: _set_size(master, _term_size(size_fd))
        )
    fds = [master, status.fd] + ([stdin_fd] if o.interactive else [])
    try:
        while True:
            try:
                r, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            master_gone = master in r and not _copy(master, stdout_fd)
            if stdin_fd in r and o.interactive:
                data = os.read(stdin_fd, 8192)
                if data:
                    _write_all(master, data)
                else:
                    fds.remove(stdin_fd)
                    # EOF on stdin: send the terminal's EOF character, as docker does.
                    with contextlib.suppress(OSError):
                        os.write(master, b"\x04")
            if status.fd in r and not master_gone:
                # {"pid": N} says the process started: keep relaying. Only its exit
                # (or the monitor gone) ends the session.
                msg = status.read()
                if msg is not None and "exit" not in msg:
                    continue
            elif master_gone:
                msg = status.read()  # the terminal closed first: wait for the exit line
            else:
                continue
            while msg is not None and "exit" not in msg:
                msg = status.read()
            # The process is gone: what it wrote last may still be in the pty.
            while not master_gone and select.select([master], [], [], 0.05)[0]:
                master_gone = not _copy(master, stdout_fd)
            return int(msg["exit"]) if msg else 255
    finally:
        if old_attrs is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, old_attrs)
        if old_handler is not None:
            signal.signal(signal.SIGWINCH, old_handler)


def _copy(src: int, dst: int) -> bool:
    try:
        data = os.read(src, 65536)
    except OSError:  # EIO: the pty's last user closed it
        return False
    if not data:
        return False
    _write_all(dst, data)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


__all__ = ["ExecFailed", "ExecOptions", "run_exec", "running_container"]
