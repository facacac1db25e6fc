"""The whole stack as `./scripts/run.sh` starts it: `python -m dashboard.serve` with its
own Redis, Celery workers and Daphne, driven from outside over real sockets.

Each start gets its own engine root and run directory under tmp_path; every process
the stack makes carries that path in its environment, which is how the test finds
(and, if something failed, kills) whatever is left.
"""

from __future__ import annotations

import base64
import http.cookiejar
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from celery import Celery

REPO = Path(__file__).resolve().parents[2]
PASSWORD_RE = re.compile(r"one-time password: (\S+)")

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.timeout(120),
]


class Stack:
    """One `python -m dashboard.serve` process and the lines it prints."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.serve"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a group of its own, for the kill on failure
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, pattern: str, timeout: float = 45) -> re.Match[str]:
        """The first line (printed since the last call) that matches `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} in time:\n" + self.output()) from None
            if line is None:
                raise AssertionError(f"serve ended before {pattern!r}:\n" + self.output())
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m

    def output(self) -> str:
        while not self._new.empty():
            line = self._new.get()
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    def stop(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def processes_mentioning(needle: str) -> list[tuple[int, str]]:
    """Processes (not this one) whose command line or environment contains `needle`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle.encode() in cmd or needle.encode() in env:
            found.append((int(pid), cmd.replace(b"\0", b" ").decode(errors="replace")))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env.pop("BERTH_REDIS_URL", None)  # the stack's own Redis
    env.pop("BERTH_SECRET_KEY", None)  # made and stored by the first start
    env.update(
        BERTH_ROOT=str(tmp_path / "root"),
        BERTH_RUN=str(tmp_path / "run"),
        BERTH_PREFIX="bt" + secrets.token_hex(3),
        BERTH_DEFAULT_NETWORK="none",
        BERTH_DASHBOARD_DB=str(tmp_path / "dashboard.sqlite3"),
        BERTH_LISTEN=f"127.0.0.1:{free_port()}",
    )
    yield env
    # Whatever a failed test left: everything the stack started mentions tmp_path.
    for pid, _ in processes_mentioning(str(tmp_path)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    started: list[Stack] = []
    yield started
    for s in started:
        s.kill()


def login(base: str, password: str) -> urllib.request.OpenerDirector:
    """Log in through the real login form; the opener keeps the session cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, page
    form = {"username": "admin", "password": password, "csrfmiddlewaretoken": token.group(1)}
    r = opener.open(base + "/login/?next=/", urllib.parse.urlencode(form).encode(), timeout=10)
    assert r.status == 200 and r.url == base + "/", (r.url, r.read()[:500])
    opener.cookies = jar  # type: ignore[attr-defined]
    return opener


def ws_ping(host: str, port: int, cookie: str) -> str:
    """A websocket round trip to /ws/ping/ (a minimal RFC 6455 client): the handshake's
    status line if refused, else the text of the answer to "ping"."""
    with socket.create_connection((host, port), timeout=10) as s:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        s.sendall(
            (
                f"GET /ws/ping/ HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n"
                f"Cookie: {cookie}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        status = head.split(b"\r\n", 1)[0].decode()
        if " 101 " not in status:
            return status
        rest = head.split(b"\r\n\r\n", 1)[1]
        mask = secrets.token_bytes(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"ping"))
        s.sendall(bytes([0x81, 0x80 | 4]) + mask + payload)  # FIN, text; masked, 4 bytes
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
            rest += s.recv(4096)
        assert rest[0] == 0x81, rest  # an unfragmented text frame
        return rest[2 : 2 + (rest[1] & 0x7F)].decode()


@contextmanager
def celery_pointed_at(url: str) -> Iterator[Celery]:
    """This process's Celery app, sending to and reading results from `url` for a while."""
    from dashboard.celery import app

    saved = {k: app.conf[k] for k in ("broker_url", "result_backend")}
    app.conf.update(broker_url=url, result_backend=url)
    try:
        yield app
    finally:
        app.conf.update(saved)
        # Drop the connection pool and result backend made for `url` (its Redis is
        # about to go): the next user gets new ones from the restored settings.
        app.pool.force_close_all()
        app._pool = None
        app._backend_cache = None
        vars(app._local).pop("backend", None)


def test_serve_runs_the_whole_stack(stack_env, stacks, tmp_path):
    host, port = stack_env["BERTH_LISTEN"].split(":")
    base = f"http://{host}:{port}"

    stack = Stack(stack_env)
    stacks.append(stack)
    password = stack.wait_for(PASSWORD_RE.pattern).group(1)
    stack.wait_for(r"dashboard at " + re.escape(base + "/"))
    key = tmp_path / "root" / "dashboard" / "secret_key"
    assert key.stat().st_mode & 0o777 == 0o600

    # The real server: the login form, then the overview with the engine's info.
    opener = login(base, password)
    body = opener.open(base + "/", timeout=10).read().decode()
    assert "CgroupDriver" in body and str(tmp_path / "root") in body

    # Websockets: refused without a session; with one, "ping" comes back through the
    # channel layer (Redis) as "pong".
    session = next(c for c in opener.cookies if c.name == "berth_sessionid")  # type: ignore[attr-defined]
    assert " 403 " in ws_ping(host, int(port), "")
    assert ws_ping(host, int(port), f"berth_sessionid={session.value}") == "pong"

    # A task through the stack's Redis and its `quick` worker.
    from dashboard.core.tasks import engine_info

    with celery_pointed_at(f"redis+socket://{tmp_path}/run/dashboard/redis.sock") as app:
        result = engine_info.delay()
        info = result.get(timeout=30)
        assert info["DockerRootDir"] == str(tmp_path / "root")
        assert info["InstancePrefix"] == stack_env["BERTH_PREFIX"]
        assert result.queue == "quick" and result.worker.startswith("quick@")
        route = app.amqp.router.route({}, "long.pull")  # long tasks are named long.<what>
        assert route["queue"].name == "long"

    # Ctrl-C: everything stops, nothing is left.
    assert stack.stop() == 0, stack.output()
    assert "berth: stopped" in stack.output()
    assert processes_mentioning(str(tmp_path)) == []

    # A second start with the same root: the admin exists, no password shown.
    again = Stack(stack_env)
    stacks.append(again)
    again.wait_for(r"an admin account exists")
    again.wait_for(r"dashboard at ")
    assert login(base, password)
    assert again.stop() == 0, again.output()
    assert not PASSWORD_RE.search(again.output())
    assert processes_mentioning(str(tmp_path)) == []
