"""A stack whose engine's "host" is a network namespace the test made (like net_env), for
the topology browser tests: bridges, veths and nftables change there, never on the real
host. The shared live_stack (tests/browser/conftest.py) runs with --network none only,
so the topology tests start this one (once per module) and reuse the session's Chromium.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.browser.conftest import (
    PASSWORDS,
    REPO,
    LiveStack,
    _reader,
    _relay_running,
    _stack_runs_relay,
    _wait_line,
    free_port,
    processes_mentioning,
)
from tests.conftest import _new_env, _teardown_env


@pytest.fixture(scope="module")
def net_stack(tmp_path_factory) -> Iterator[LiveStack]:
    tmp = tmp_path_factory.mktemp("topostack")
    eng = _new_env(tmp)
    eng.host_netns = f"{eng.prefix}h"
    subprocess.run(["ip", "netns", "add", eng.host_netns], check=True)
    subprocess.run(["ip", "-n", eng.host_netns, "link", "set", "lo", "up"], check=True)
    proc = None
    stack = None
    try:
        eng.engine().bootstrap_image("busybox", None)
        env = dict(eng.env)  # BERTH_HOST_NETNS and BERTH_DEFAULT_NETWORK=bridge with it
        env.pop("BERTH_REDIS_URL", None)
        env.pop("BERTH_SECRET_KEY", None)
        env.update(
            BERTH_DASHBOARD_DB=str(tmp / "dashboard.sqlite3"),
            BERTH_LISTEN=f"127.0.0.1:{free_port()}",
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
        if _relay_running() and not _stack_runs_relay(str(tmp)):
            stack.extra.append(
                subprocess.Popen(
                    [sys.executable, "-m", "dashboard.live.relay"],
                    env=env,
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
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
        _teardown_env(eng)
        for pid in processes_mentioning(str(tmp)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", eng.host_netns], check=False)


@pytest.fixture
def net_page_as(net_stack, browser) -> Iterator:
    """net_page_as(role) -> a Playwright Page logged in to net_stack as that user."""
    contexts = []

    def make(role: str):
        ctx = browser.new_context(accept_downloads=True)
        ctx.set_default_timeout(20_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.goto(net_stack.url("/login/?next=/"))
        page.fill("input[name=username]", role)
        page.fill("input[name=password]", net_stack.passwords[role])
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/login/" not in u)
        return page

    yield make
    for ctx in contexts:
        ctx.close()
