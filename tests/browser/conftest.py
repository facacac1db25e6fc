"""Browser fixtures: the REAL stack (`python -m dashboard.serve`) and headless Chromium.

One stack per test session (starting it takes seconds): its own engine root, run
directory and prefix (registered with tests/conftest.py's leak check), busybox in its
image store, Redis, Celery workers and Daphne on a free port, and three users:
admin (the one-time password serve prints), operator and viewer (made with
`manage.py shell -c` under the stack's environment).

    @pytest.mark.browser
    def test_x(live_stack, page_as):
        page = page_as("operator")          # a logged-in Playwright page
        page.goto(live_stack.url("/containers/"))

Whatever a test leaves running is removed at the end of the session: containers
through the engine, processes by the stack's root path in their environment.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import EngineEnv, _new_env, _teardown_env, add_host_netns

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORDS = {"operator": "operator-pw-1", "viewer": "viewer-pw-1"}


def pytest_collection_modifyitems(items):
    # Every test here drives Chromium: marked so `-m "not browser"` skips them all.
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)
            item.add_marker(
                pytest.mark.skipif(
                    not (shutil.which("redis-server") and os.path.exists(CHROMIUM)),
                    reason="needs redis-server and /usr/bin/chromium",
                )
            )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(needle: str) -> list[int]:
    """Processes (not this one) whose command line or environment contains `needle`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            blob = Path(f"/proc/{pid}/cmdline").read_bytes()
            blob += Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle.encode() in blob:
            found.append(int(pid))
    return found


@dataclass
class LiveStack:
    """A running `python -m dashboard.serve` and what a test needs to talk to it."""

    base: str  # http://127.0.0.1:PORT
    env: dict[str, str]  # the stack's environment (BERTH_ROOT, BERTH_RUN, ...)
    engine_env: EngineEnv  # the engine it drives (for setting up / checking containers)
    proc: subprocess.Popen
    passwords: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    extra: list[subprocess.Popen] = field(default_factory=list)  # e.g. a relay we started

    def url(self, path: str) -> str:
        return self.base + path

    def output(self) -> str:
        return "\n".join(self.lines)

    def manage(self, code: str) -> str:
        """`manage.py shell -c CODE` against the stack's database; its stdout."""
        p = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout

    def engine(self):
        return self.engine_env.engine()


def _reader(proc: subprocess.Popen, lines: list[str], new: queue.Queue) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        new.put(lines[-1])
    new.put(None)


def _wait_line(new: queue.Queue, pattern: str, lines: list[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = new.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"serve printed no {pattern!r}:\n" + "\n".join(lines)) from None
        if line is None:
            raise AssertionError(f"serve ended before {pattern!r}:\n" + "\n".join(lines))
        if m := re.search(pattern, line):
            return m.group(1) if m.groups() else line


@contextmanager
def start_stack(tmp: Path, default_network: str = "none") -> Iterator[LiveStack]:
    """The real stack with an engine whose "host" is a network namespace made here (as
    net_env does): whatever a page makes (the default bridge, veths, nftables rules)
    lands there, never on the machine's own network."""
    eng = _new_env(tmp)  # root under tmp, run dir /run/<prefix> (short: conmon sockets)
    eng.host_netns = f"{eng.prefix}h"
    add_host_netns(eng.host_netns)
    proc = None
    stack = None
    try:
        eng.engine().bootstrap_image("busybox", None)
        env = dict(eng.env)  # carries BERTH_HOST_NETNS
        env.pop("BERTH_REDIS_URL", None)
        env.pop("BERTH_SECRET_KEY", None)
        env.update(
            BERTH_DASHBOARD_DB=str(tmp / "dashboard.sqlite3"),
            BERTH_LISTEN=f"127.0.0.1:{free_port()}",
            BERTH_DEFAULT_NETWORK=default_network,
            PYTHONUNBUFFERED="1",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.serve"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines: list[str] = []
        new: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(proc, lines, new), daemon=True).start()
        stack = LiveStack(
            base="http://" + env["BERTH_LISTEN"], env=env, engine_env=eng, proc=proc, lines=lines
        )
        stack.passwords["admin"] = _wait_line(new, r"one-time password: (\S+)", lines)
        _wait_line(new, r"(dashboard at )", lines)
        stack.manage(
            "from django.contrib.auth.models import User\n"
            "from dashboard.accounts.models import Grant\n"
            + "".join(
                f"u = User.objects.create_user({role!r}, password={pw!r})\n"
                f"Grant.objects.create(user=u, role={role!r})\n"
                for role, pw in PASSWORDS.items()
            )
        )
        stack.passwords.update(PASSWORDS)
        yield stack
    finally:
        for p in stack.extra if stack else []:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _teardown_env(eng)  # containers the tests left, monitors, cgroups, run dir
        for pid in processes_mentioning(str(tmp)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", eng.host_netns], check=False)


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory) -> Iterator[LiveStack]:
    with start_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture(scope="session")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextmanager
def pages_on(stack: LiveStack, browser) -> Iterator:
    """pages_on(stack, browser) as make; make(role) -> a Playwright Page logged in to
    ``stack`` through the login form. Each page has a context of its own (own cookies),
    closed at the end."""
    contexts = []

    def make(role: str):
        ctx = browser.new_context(accept_downloads=True)
        ctx.set_default_timeout(20_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.goto(stack.url("/login/?next=/"))
        page.fill("input[name=username]", role)
        page.fill("input[name=password]", stack.passwords[role])
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/login/" not in u)
        return page

    try:
        yield make
    finally:
        for ctx in contexts:
            ctx.close()


@pytest.fixture
def page_as(live_stack, browser) -> Iterator:
    """page_as(role) -> a Playwright Page logged in to the session's stack as that user."""
    with pages_on(live_stack, browser) as make:
        yield make


@pytest.fixture
def unique_name() -> str:
    """A container name no other test (or run) uses."""
    import secrets

    return "bw" + secrets.token_hex(4)
