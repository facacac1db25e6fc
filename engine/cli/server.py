"""The CLI server: a resident, pre-imported Python that runs `berth` commands.

Interpreter start, imports and building the argument parser cost ~55 ms on
every `berth` command. The native client (native/berth.c) hands its command
here instead: this process, with every CLI module already imported and the
parser built, forks one child per command; the child takes the client's stdio
(passed over the socket), argv, environment, working directory and umask, runs
``engine.cli.main.main`` exactly as the Python entry point would, and writes
back the exit code. Forking costs ~1 ms.

It is not a daemon in Docker's sense: it holds no state, owns no container,
and nothing depends on it. The client falls back to running the Python CLI
itself whenever the server is absent or refuses a request, and starts one on
demand. The server exits when idle (``IDLE_EXIT``), when its socket is removed
or replaced, or when the engine's source changes under it (so an upgrade or an
edit never runs stale code).

A served command runs with the server's privileges and in its namespaces, so
the server serves only a client that could have run the command itself with
the same result: checked from the kernel's view of the client process
(SO_PEERCRED, then /proc/<pid>), never from what the client says -- same uid
and gid, same namespaces and root, same capabilities, no_new_privs and seccomp
mode, same resource limits -- and of its own install (the interpreter path the
client was built for). Anything else runs in the client's own process.

Protocol (one connection per command): the client sends a 4-byte
little-endian length, then NUL-terminated strings -- magic, interpreter path,
cwd, umask (octal), the signals it ignores (comma-separated numbers), argc,
argv..., environment... -- with fds 0, 1, 2 attached (SCM_RIGHTS). The server
forks at once; the child reads the request and answers ``N<reason>\\n`` when
it will not serve it (the client then runs the Python CLI itself; nothing
ran), otherwise ``P<pid>\\n`` before anything else (the client forwards
signals to that pid, or to its process group for the terminal's), then
``X<code>\\n`` when done. If the child is killed by a signal, the server
writes ``S<signal>\\n`` and the client dies of the same signal.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

MAGIC = "berth-cli-2"
IDLE_EXIT = 600.0  # seconds without a command
MAX_MESSAGE = 4 << 20
NAMESPACES = ("mnt", "net", "pid", "user", "uts", "ipc", "cgroup")
ENGINE_DIR = Path(__file__).resolve().parent.parent


def _process_view(pid: int | str) -> dict[str, str]:
    """What must match between the server and a client it serves (from /proc)."""
    view = {}
    for kind in NAMESPACES:
        try:
            view[f"ns:{kind}"] = os.readlink(f"/proc/{pid}/ns/{kind}")
        except OSError:
            view[f"ns:{kind}"] = ""
    try:
        st = os.stat(f"/proc/{pid}/root")
        view["root"] = f"{st.st_dev}:{st.st_ino}"
    except OSError:
        view["root"] = ""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in (
                    "CapInh",
                    "CapPrm",
                    "CapEff",
                    "CapBnd",
                    "CapAmb",
                    "NoNewPrivs",
                    "Seccomp",
                ):
                    view[key] = line.split(":", 1)[1].strip()
        with open(f"/proc/{pid}/limits") as f:
            view["limits"] = f.read()
    except OSError:
        view["status"] = "unreadable"
    return view


def _differs(mine: dict[str, str], peer: dict[str, str]) -> str:
    """The first difference, named for the client's debug output ("" if none)."""
    for key, value in mine.items():
        if peer.get(key) != value:
            if key.startswith("ns:") or key == "root":
                return "other namespaces"
            if key == "limits":
                return "other resource limits"
            return f"other privileges ({key})"
    return ""


def source_stamp(root: Path = ENGINE_DIR) -> tuple[int, int]:
    """(newest mtime in ns, file count) of the engine's Python sources."""
    newest, count = 0, 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    if e.name != "__pycache__":
                        stack.append(e.path)
                elif e.name.endswith(".py"):
                    count += 1
                    newest = max(newest, e.stat(follow_symlinks=False).st_mtime_ns)
    return newest, count


def preload():
    """Import everything a command may need and build the full parser once."""
    import importlib

    from engine.cli import main as cli_main

    for mod in (
        "engine.api",
        "engine.containers.api",
        "engine.containers.lifecycle",
        "engine.containers.attach",
        "engine.containers.records",
        "engine.containers.create",
        "engine.containers.remove",
        "engine.runtime.conmon",
        "engine.runtime.spec",
        "engine.runtime.oci",
        "engine.runtime.seccomp",
        "engine.runtime.seccomp_cache",
        "engine.runtime.users",
        "engine.network.ipam",
        "encodings.ascii",
        "engine.build.executor",
        "engine.build.sources",
        "engine.build.copy",
        "engine.build.options",
        "engine.registry.pull",
        "engine.registry.context",
        "engine.registry.progress",
        "encodings.idna",
        "engine.images.store",
        "engine.network.store",
        "engine.cgroups",
        "engine.netns",
        "engine.state",
        "json",
        "sqlite3",
        "termios",
        "tty",
    ):
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - a module that cannot load is loaded per command instead
            pass
    try:
        importlib.import_module("pyroute2")
    except Exception:  # noqa: BLE001
        pass
    return cli_main.build_parser()


class Request:
    def __init__(self, conn: socket.socket, fds: list[int], fields: list[str]):
        self.conn = conn
        self.fds = fds
        self.fields = fields

    def close_fds(self) -> None:
        _close_all(self.fds)


def read_request(conn: socket.socket) -> Request | None:
    """The client's message, or None for a malformed one."""
    conn.settimeout(5.0)
    fds = array.array("i")
    data, anc, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    fdl = list(fds)
    if len(data) < 4:
        return _bad(fdl)
    (length,) = struct.unpack("<I", data[:4])
    if length > MAX_MESSAGE:
        return _bad(fdl)
    body = bytearray(data[4:])
    while len(body) < length:
        more = conn.recv(min(1 << 20, length - len(body)))
        if not more:
            return _bad(fdl)
        body += more
    if len(fdl) != 3:
        return _bad(fdl)
    fields = bytes(body[:length]).split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    text = [f.decode("utf-8", "surrogateescape") for f in fields]
    return Request(conn, fdl, text)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _bad(fds: list[int]) -> None:
    """A malformed request: drop the fds it came with."""
    _close_all(fds)


def refusal(req: Request, mine: dict[str, str]) -> str:
    """Why this request must run in the client's own process ("" = serve it)."""
    f = req.fields
    if len(f) < 6 or f[0] != MAGIC:
        return "protocol"
    if f[1] != sys.executable:
        return "another install"
    creds = req.conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    if uid != os.geteuid() or gid != os.getegid():
        return "another user"
    if pid <= 0:
        return "other namespaces"  # not visible in our PID namespace
    why = _differs(mine, _process_view(pid))
    if why:
        return why
    try:
        argc = int(f[5])
        int(f[3], 8)
        ignored = [int(x) for x in f[4].split(",") if x]
    except ValueError:
        return "protocol"
    if argc < 0 or 6 + argc > len(f) or any(not 0 < n < signal.NSIG for n in ignored):
        return "protocol"
    return ""


def run_child(req: Request, parser) -> None:
    """In the forked child: become the client's command, run it, report, exit."""
    code = 125
    conn = req.conn
    try:
        # First of all, so it always precedes the exit code on the stream.
        conn.sendall(b"P%d\n" % os.getpid())
        f = req.fields
        cwd, umask, argc = f[2], int(f[3], 8), int(f[5])
        ignored = {int(x) for x in f[4].split(",") if x}
        argv = f[6 : 6 + argc]
        env = dict(e.split("=", 1) for e in f[6 + argc :] if "=" in e)
        _client_signals(ignored)
        # Its own process group: the client forwards the terminal's signals
        # (Ctrl-C, Ctrl-Z) to the whole group, as the terminal would have.
        os.setpgid(0, 0)
        for target, fd in enumerate(req.fds):
            os.dup2(fd, target)
        req.close_fds()
        os.chdir(cwd)
        os.umask(umask)
        os.environ.clear()
        os.environ.update(env)
        time.tzset()  # TZ is the client's now
        _fresh_stdio()
        _die_with_client(conn)
        sys.argv = ["berth", *argv]
        from engine.cli import main as cli_main

        try:
            code = cli_main.main(argv, parser=parser)
        except SystemExit as e:  # argparse --help, explicit sys.exit
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
        _join_threads()
    except BaseException as e:  # noqa: BLE001 - the client must get a code whatever happens
        try:
            print(f"Error: {type(e).__name__}: {e}", file=sys.stderr)
        except Exception:  # noqa: BLE001
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        try:
            import atexit

            atexit._run_exitfuncs()
        except Exception:  # noqa: BLE001
            pass
        try:
            conn.sendall(b"X%d\n" % (int(code) & 0xFF))
        except OSError:
            pass
        os._exit(int(code) & 0xFF)


def _client_signals(ignored: set[int]) -> None:
    """Signal dispositions as the Python CLI would have had them in the client's
    process: defaults, SIGINT as KeyboardInterrupt, and what the client ignores
    (`nohup berth ...` ignores SIGHUP) stays ignored."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGQUIT):  # fmt: skip
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in ignored:
        if sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGPIPE):
            try:
                signal.signal(sig, signal.SIG_IGN)
            except (OSError, ValueError):
                pass


def _die_with_client(conn: socket.socket) -> None:
    """When the client goes (killed, even by SIGKILL), so does its command, as if
    it had run in the client's process: e.g. a build killed mid-RUN leaves its
    leftovers for the next command to clean, as `kill -9` of the Python CLI does."""
    import threading

    def watch() -> None:
        try:
            while conn.recv(1):  # the client never sends after its request
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="client-watch", daemon=True).start()


def _fresh_stdio() -> None:
    """New text streams over fds 0-2, buffered as the interpreter would buffer them
    (UTF-8 whatever the server's locale was; undecodable bytes pass through)."""
    import io

    def text(fd: int, mode: str, **kw) -> io.TextIOWrapper:
        raw = io.FileIO(fd, mode, closefd=False)
        buf = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        return io.TextIOWrapper(buf, encoding="utf-8", **kw)

    sys.stdin = text(0, "r", errors="surrogateescape")
    sys.stdout = text(1, "w", errors="surrogateescape", line_buffering=os.isatty(1))
    sys.stderr = text(2, "w", errors="backslashreplace", line_buffering=True)


def _join_threads() -> None:
    """What interpreter shutdown would do: wait for non-daemon threads."""
    import threading

    me = threading.current_thread()
    for t in threading.enumerate():
        if t is not me and not t.daemon:
            t.join()


class Server:
    def __init__(self, path: Path):
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.children: dict[int, socket.socket] = {}
        self.sock: socket.socket | None = None
        self.inode = 0
        self.lock_fd = -1
        self.wake: tuple[int, int] = (-1, -1)

    def bind(self) -> bool:
        """Take the lock and the socket; False if another server holds them or
        the directory is not root's alone (then nobody is served from it)."""
        parent = self.path.parent
        try:
            parent.mkdir(mode=0o700)
        except FileExistsError:
            pass
        st = os.stat(parent)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return False
        self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        os.ftruncate(self.lock_fd, 0)
        os.write(self.lock_fd, b"%d\n" % os.getpid())
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(tmp))
        os.chmod(tmp, 0o600)
        s.listen(64)
        os.rename(tmp, self.path)  # atomic: clients never see a missing socket
        self.inode = os.stat(self.path).st_ino
        self.sock = s
        return True

    def still_ours(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except FileNotFoundError:
            return False

    def shutdown(self) -> None:
        if self.still_ours():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        if self.sock:
            self.sock.close()

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if os.WIFSIGNALED(status):
                # The child died before it could report: tell the client how.
                try:
                    conn.sendall(b"S%d\n" % os.WTERMSIG(status))
                except OSError:
                    pass
            conn.close()

    def serve(self) -> None:
        parser = preload()
        mine = _process_view("self")
        stamp = source_stamp()
        self.wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        wake_r = self.wake[0]
        signal.set_wakeup_fd(self.wake[1])
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        last = time.monotonic()
        assert self.sock is not None
        try:
            while True:
                ready, _, _ = select.select([self.sock, wake_r], [], [], 1.0)
                if wake_r in ready:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                self.reap()
                if self.sock in ready:
                    last = time.monotonic()
                    # The source check runs before every fork: never run stale code.
                    if source_stamp() != stamp or not self.still_ours():
                        return
                    self.accept(parser, mine)
                    continue
                idle = time.monotonic() - last
                if not self.still_ours() or (idle > IDLE_EXIT and not self.children):
                    return
        finally:
            self.shutdown()

    def accept(self, parser, mine: dict[str, str]) -> None:
        """Fork at once: the child reads and judges the request, so a slow or
        stalled client holds up only its own child, never the next command."""
        assert self.sock is not None
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        try:
            pid = os.fork()
        except OSError:
            conn.close()  # EOF before "P": the client runs the command itself
            return
        if pid == 0:
            try:
                self._close_inherited(conn)
                serve_one(conn, parser, mine)
            finally:
                os._exit(125)
        self.children[pid] = conn

    def _close_inherited(self, conn: socket.socket) -> None:
        """In a child: drop the server's own fds (listener, lock, wake pipe, other
        commands' connections), so a long command (logs -f, run -it) holds none
        of them after the server has gone."""
        assert self.sock is not None
        self.sock.close()
        _close_all([self.lock_fd, *self.wake])
        for other in self.children.values():
            if other is not conn:
                other.close()
        self.children.clear()


def serve_one(conn: socket.socket, parser, mine: dict[str, str]) -> None:
    """The forked child's whole job: read, judge, and run or refuse the request."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        req = read_request(conn)
    except OSError:
        req = None
    if req is None:
        os._exit(0)
    why = refusal(req, mine)
    if why:
        req.close_fds()
        try:
            conn.sendall(f"N{why}\n".encode())
        except OSError:
            pass
        os._exit(0)
    conn.settimeout(None)
    run_child(req, parser)


def serve(path: str | None = None) -> int:
    """Entry point (the native client starts it with the socket path as argv[1])."""
    target = Path(path or sys.argv[1])
    os.umask(0o077)
    srv = Server(target)
    try:
        if not srv.bind():
            return 0
    except OSError:
        return 1
    srv.serve()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
