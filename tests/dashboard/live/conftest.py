"""Fixtures for the live app (events, tasks) and the images pages: a private Redis, a real
Celery worker (`celery -A dashboard.celery:app worker -Q quick,long`) sharing the test
database, and helpers to read what it did.

The worker is another process, so the test database must be a file it can open:
tests/dashboard/conftest.py points DATABASES' TEST NAME at one, and the tests that use the
worker use ``transactional_db`` so their rows are committed where the worker sees them.
"""

from __future__ import annotations

import atexit
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def wait_for(check: Callable[[], object], timeout: float = 60, what: str = "condition"):
    """Poll ``check`` until it returns something truthy (returned); generous deadlines."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.sock = tmp / "redis.sock"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.sock),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(tmp), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_for(self.sock.exists, 30, "redis-server's socket")
        import redis

        client = redis.Redis(unix_socket_path=str(self.sock))
        wait_for(lambda: _pings(client), 30, "redis-server")
        client.close()

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    # Short path: a unix socket path must fit in 108 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="brd-", dir="/tmp"))
    server = RedisServer(tmp)
    atexit.register(server.stop)  # also when the session ends without fixture teardown
    yield server
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def live_redis(redis_server, settings) -> Iterator[RedisServer]:
    """Point this process's channel layer, Celery app and tasks API at the private Redis
    (flushed first: each test starts with no streams or queued messages)."""
    import redis

    from dashboard.celery import app

    redis.Redis(unix_socket_path=str(redis_server.sock)).flushall()
    settings.REDIS_URL = redis_server.url
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_server.url]},
        }
    }
    celery_url = "redis+socket://" + str(redis_server.sock)
    saved = {k: app.conf[k] for k in ("broker_url", "result_backend")}
    _reset_celery_connections(app)
    app.conf.update(broker_url=celery_url, result_backend=celery_url)
    try:
        yield redis_server
    finally:
        app.conf.update(saved)
        _reset_celery_connections(app)


def _reset_celery_connections(app) -> None:
    """Forget every broker connection and result backend made so far: the next use makes
    new ones from the current settings. (kombu keeps pools per URL in a global registry,
    so closing one without removing it would leave a closed pool for the next user.)"""
    from kombu import pools

    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None
    app._backend_cache = None
    vars(app._local).pop("backend", None)


class Worker:
    """A real Celery worker process (its own process group), its output kept."""

    def __init__(self, env: dict[str, str], concurrency: int = 2) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.name = f"t{secrets.token_hex(3)}@%h"
        cmd = [
            sys.executable, "-m", "celery", "-A", "dashboard.celery:app", "worker",
            "-Q", "quick,long", "-n", self.name, "-c", str(concurrency), "-l", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-I", "tests.dashboard.live.tasks_for_tests",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        self._q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(90):
            self.stop()
            raise AssertionError("celery worker not ready:\n" + self.output())

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if " ready." in line:
                self.ready.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def pool_pids(self) -> list[int]:
        """The worker's pool processes (children of the main process)."""
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid:
                out.append(int(pid))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def worker_env(redis: RedisServer, extra: dict[str, str] | None = None) -> dict[str, str]:
    from django.db import connection

    env = dict(os.environ)
    env.update(
        BERTH_REDIS_URL=redis.url,
        BERTH_DASHBOARD_DB=connection.settings_dict["NAME"],
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        PYTHONWARNINGS="ignore",
    )
    env.update(extra or {})
    return env


@pytest.fixture
def start_worker(live_redis, transactional_db) -> Iterator[Callable[..., Worker]]:
    """start_worker(extra_env=None) -> a running Worker; all are stopped at the end."""
    made: list[Worker] = []

    def start(extra_env: dict[str, str] | None = None, concurrency: int = 2) -> Worker:
        w = Worker(worker_env(live_redis, extra_env), concurrency)
        made.append(w)
        return w

    yield start
    for w in made:
        w.stop()


def engine_env_vars() -> dict[str, str]:
    """The BERTH_* variables of this process (set by engine fixtures via monkeypatch)."""
    return {k: v for k, v in os.environ.items() if k.startswith("BERTH_")}
