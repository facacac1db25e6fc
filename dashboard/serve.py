"""`python -m dashboard.serve`: the whole dashboard on one machine, in the foreground.

Starts a private redis-server (unix socket under the run directory) unless
BERTH_REDIS_URL names one, applies migrations, makes the first admin account
(printing its one-time password), then runs one Celery worker per queue, the events
relay (engine events log -> channel layer, dashboard/live/relay.py) and Daphne on
BERTH_LISTEN (default 127.0.0.1:8000). SIGINT/SIGTERM stop all of it: the web server
first, then the workers and the relay, then Redis, which they need until the end.

Each child runs in a process group of its own, so a Ctrl-C on the terminal reaches
only this supervisor, which then stops the children in that order; and each child
gets SIGTERM from the kernel if the supervisor dies without cleaning up.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

# Children run with this interpreter (the venv's, as run.sh starts us): never a
# `python3` from PATH, which may be another Python or a slow pyenv shim.
PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent
STOP_GRACE = 10.0  # seconds a child gets to exit after SIGTERM before SIGKILL
START_TIMEOUT = 30.0
# Pool size per queue's worker: lifecycle actions are short, long operations few at once.
WORKERS = {"quick": 2, "long": 2}

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """Raised in the main thread by SIGINT/SIGTERM."""


class Failed(Exception):
    """Start-up failed or a child died: stop the rest and exit non-zero."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]

    def exited(self) -> bool:
        """Whether the child has exited, *without* reaping it: while it is an unreaped
        zombie its PID (= its process group ID) cannot be reused, so killing the group
        afterwards reaches only its own leftovers (e.g. Celery's pool processes)."""
        if self.proc.returncode is not None:
            return True
        try:
            r = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return r is not None


_hurry = False  # a second signal during shutdown: stop waiting, kill


def _set_hurry(signum: int, frame: FrameType | None) -> None:
    global _hurry
    _hurry = True


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # Only the first signal interrupts; later ones, even while the shutdown is under
    # way, must not break out of it, only hurry it up.
    signal.signal(signal.SIGINT, _set_hurry)
    signal.signal(signal.SIGTERM, _set_hurry)
    raise Stop(signal.Signals(signum).name)


def say(msg: str) -> None:
    print(f"berth: {msg}", flush=True)


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:8000`)."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise Failed(f"BERTH_LISTEN={value!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def ensure_secret_key(path: Path) -> None:
    """First start: a random SECRET_KEY, readable by root only, that every process
    (web, workers) then reads through settings. Skipped when BERTH_SECRET_KEY is set."""
    if os.environ.get("BERTH_SECRET_KEY") or path.exists():
        return
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(50) + "\n")
    os.replace(tmp, path)  # no half-written key if we are stopped right here


def _child_setup(parent: int) -> None:
    """Runs in the child between fork and exec."""
    # Die with the supervisor even if it is SIGKILLed; and the signals the parent
    # blocked around the fork must not stay blocked in the child.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def spawn(children: list[Child], name: str, cmd: list[str], env: dict[str, str]) -> None:
    parent = os.getpid()
    # Signals are held while forking so that a Ctrl-C cannot land between the fork and
    # the child's entry in `children` (it would be left running).
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=REPO,
            process_group=0,
            preexec_fn=lambda: _child_setup(parent),
        )
        children.append(Child(name, proc))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _check_alive(children: list[Child]) -> None:
    for c in children:
        if c.exited():
            raise Failed(f"{c.name} exited unexpectedly")


def _wait_until(children: list[Child], ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        _check_alive(children)
        if time.monotonic() > deadline:
            raise Failed(f"{what} not ready after {START_TIMEOUT:.0f} s")
        time.sleep(0.1)


def _redis_answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _tcp_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _check_free(host: str, port: int) -> None:
    """Fail early, with a clear message, if the web port is taken: the readiness check
    would otherwise find the other program listening there and report us ready."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Daphne (Twisted) binds
        try:
            s.bind((host, port))
        except OSError as e:
            raise Failed(f"cannot listen on {host}:{port}: {e.strerror}") from None


def stop_all(children: list[Child]) -> None:
    """Web first (no new requests), then the workers, then Redis; SIGTERM to each
    group's leader, SIGKILL to whatever of its process group is left after the grace."""
    order = ["web"] + [f"worker-{q}" for q in WORKERS] + ["relay", "redis"]
    for names in (order[:1], order[1:-1], order[-1:]):
        batch = [c for c in children if c.name in names]
        for c in batch:
            if not c.exited():
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while not _hurry and time.monotonic() < deadline and not all(c.exited() for c in batch):
            time.sleep(0.05)
        for c in batch:
            try:
                os.killpg(c.proc.pid, signal.SIGKILL)  # the leader if stuck, and leftovers
            except ProcessLookupError:
                pass
            c.proc.wait()


def serve() -> int:
    from dashboard import settings as cfg

    host, port = parse_listen(os.environ.get("BERTH_LISTEN", "127.0.0.1:8000"))
    _check_free(host, port)
    cfg.DASHBOARD_RUN.mkdir(parents=True, exist_ok=True, mode=0o700)
    # One supervisor per run directory: a second one would take over the first's
    # Redis socket. The lock goes with this process, however it ends.
    lock = open(cfg.DASHBOARD_RUN / "serve.lock", "w")  # held open until we exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise Failed(f"another `dashboard.serve` is running for {cfg.ENGINE_RUN}") from None

    ensure_secret_key(cfg.SECRET_KEY_FILE)
    Path(cfg.DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    children: list[Child] = []
    try:
        if not os.environ.get("BERTH_REDIS_URL"):
            sock = cfg.REDIS_SOCKET
            if len(str(sock)) > 107:
                raise Failed(f"Redis socket path too long for a unix socket: {sock}")
            redis = [
                "redis-server", "--port", "0", "--unixsocket", str(sock),
                "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                "--dir", str(cfg.DASHBOARD_RUN), "--loglevel", "warning",
            ]  # fmt: skip
            spawn(children, "redis", redis, env)
            _wait_until(children, lambda: _redis_answers(sock), "redis-server")

        import django
        from django.core.management import call_command
        from django.db import connections

        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        # WhiteNoise serves STATIC_ROOT; collected here so it is never stale or missing.
        call_command("collectstatic", interactive=False, verbosity=0)
        from dashboard.core.management.commands.ensure_admin import ensure_admin

        password = ensure_admin("admin")
        connections.close_all()  # the children open their own; we keep none
        if password:
            # Printed at once, not in the banner below: if the start fails after this
            # point the account exists anyway, and this is the only time it is shown.
            say(f"created admin account 'admin'; one-time password: {password}")
        else:
            say("an admin account exists (its password was shown on first start)")

        # The engine needs root, and so does the worker that drives it: Celery's
        # warning about running as root says nothing the operator can act on.
        quiet = "ignore:You're running the worker with superuser privileges"
        wenv = dict(env, PYTHONWARNINGS=",".join(filter(None, [env.get("PYTHONWARNINGS"), quiet])))
        for queue, concurrency in WORKERS.items():
            worker = [
                PYTHON, "-m", "celery", "-A", "dashboard.celery:app", "--quiet", "worker",
                "-Q", queue, "-n", f"{queue}@%h", "-c", str(concurrency), "-l", "INFO",
                "--without-gossip", "--without-mingle",
            ]  # fmt: skip
            spawn(children, f"worker-{queue}", worker, wenv)
        spawn(children, "relay", [PYTHON, "-m", "dashboard.live.relay"], env)
        web = [PYTHON, "-m", "daphne", "-b", host, "-p", str(port), "dashboard.asgi:application"]
        spawn(children, "web", web, env)
        _wait_until(children, lambda: _tcp_answers(host, port), "daphne")

        shown = f"[{host}]" if ":" in host else host
        say(f"dashboard at http://{shown}:{port}/ (log in as admin); Ctrl-C stops everything")
        while True:
            _check_alive(children)
            time.sleep(0.5)
    except Stop as e:
        say(f"{e}: stopping")
        return 0
    except Failed as e:
        say(f"error: {e}; stopping")
        return 1
    finally:
        # From here a signal only hurries the shutdown up (no more waiting).
        signal.signal(signal.SIGINT, _set_hurry)
        signal.signal(signal.SIGTERM, _set_hurry)
        stop_all(children)
        say("stopped")


def main() -> None:
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        sys.exit(serve())
    except Stop:  # before any child started
        sys.exit(0)
    except Failed as e:
        say(f"error: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
