"""Shared fixtures: every test gets its own engine (root, run dir, prefix), and
the session fails if anything leaked (mounts, cgroups, netns, monitors)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Tests send traffic only to namespaces they made: Berth's DNS resolver must not
# forward unknown names to the host's upstream servers.
os.environ.setdefault("BERTH_DNS_UPSTREAM", "none")
# ...and containers run without --network stay off the real host's network unless
# a test made a host netns for its engine (the net_env fixture).
os.environ.setdefault("BERTH_DEFAULT_NETWORK", "none")
# The `berth` users run: the native client (scripts/setup.sh builds it), which
# hands commands to the CLI server; this session gets a server of its own
# (stopped at the end), so tests never use one started outside them.
_CLIENT = REPO / ".venv" / "bin" / "berth"
BERTH_NATIVE = _CLIENT.is_file() and _CLIENT.read_bytes()[:4] == b"\x7fELF"
BERTH = [str(_CLIENT)] if BERTH_NATIVE else [sys.executable, "-m", "engine.cli.main"]
CLI_SOCKET = Path(f"/run/berth-cli/test-{os.getpid()}.sock")
os.environ["BERTH_CLI_SOCKET"] = str(CLI_SOCKET)
# Every engine a test makes uses a prefix starting with this, so the leak
# check can find what tests made (and only that).
TEST_PREFIX = "bt"


@dataclass
class EngineEnv:
    root: Path
    run: Path
    prefix: str
    host_netns: str = ""

    @property
    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e.update(BERTH_ROOT=str(self.root), BERTH_RUN=str(self.run), BERTH_PREFIX=self.prefix)
        e["BERTH_HOST_NETNS"] = self.host_netns
        # Without a test-made host netns, containers default to --network none so
        # that no test puts bridges or rules on the real host.
        e["BERTH_DEFAULT_NETWORK"] = "bridge" if self.host_netns else "none"
        return e

    def config(self):
        from engine.config import EngineConfig

        return EngineConfig(
            root=self.root,
            run=self.run,
            prefix=self.prefix,
            host_netns=self.host_netns,
            default_network="bridge" if self.host_netns else "none",
        )

    def engine(self, actor: str | None = None):
        from engine.api import Engine

        return Engine(self.config(), actor=actor)

    def berth(
        self, *args: str, input: bytes | None = None, check: bool = False, timeout: float = 120
    ):
        """Run the real CLI in a subprocess; returns CompletedProcess (text)."""
        p = subprocess.run(
            [*BERTH, *args],
            env=self.env,
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(REPO),
        )
        if check and p.returncode != 0:
            raise AssertionError(
                f"berth {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
            )
        return p


@pytest.fixture(params=["openat2", "walk"])
def both_resolvers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test against the kernel's RESOLVE_IN_ROOT and the userspace walk
    (modules that write into root filesystems use it for every test)."""
    from engine import safepath

    if request.param == "openat2":
        if not safepath.openat2_available():
            pytest.skip("kernel without openat2")
    else:
        monkeypatch.setattr(safepath, "_have_openat2", False)
    return request.param


# Prefixes of the engines this session made: the leak check looks only at
# these, so another test run on the same host cannot make this one fail.
SESSION_PREFIXES: set[str] = set()
SESSION_ROOTS: set[str] = set()


def _new_env(tmp_path: Path) -> EngineEnv:
    prefix = TEST_PREFIX + secrets.token_hex(3)
    SESSION_PREFIXES.add(prefix)
    SESSION_ROOTS.add(str(tmp_path / "root"))
    # Short run dir: conmon's attach socket path must fit in sun_path (108 bytes).
    run = Path("/run") / f"{prefix}"
    return EngineEnv(root=tmp_path / "root", run=run, prefix=prefix)


def _teardown_env(e: EngineEnv) -> None:
    """Stop whatever the test left running, then remove the run dir."""
    if e.root.exists():
        try:
            eng = e.engine()
            for c in eng.containers(all=True):
                try:
                    eng.remove_container(c.id, force=True)
                except Exception:
                    pass
            from engine import helpers

            helpers.stop_all(eng)
        except Exception:
            pass
    _wait_for_monitors(e)
    _remove_instance_cgroups(e.prefix)
    for ns in Path("/run/netns").glob(f"{e.prefix}-*"):
        from engine.netns import delete_netns

        delete_netns(ns.name)
    shutil.rmtree(e.run, ignore_errors=True)
    # The process keeps one SQLite connection per (thread, root): hundreds of test
    # roots would exhaust its descriptors (select() fails past 1024).
    from engine.state import close_connections

    close_connections(e.config().db_path)


def _wait_for_monitors(e: EngineEnv, timeout: float = 10.0) -> None:
    """conmon and its (possibly delayed) exit command outlive `rm`; let them finish
    before the run directory goes, or they would make parts of it again."""
    import time

    needle = str(e.run).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmd and (b"conmon" in cmd or b"cleanup" in cmd):
                busy = True
                break
        if not busy:
            return
        time.sleep(0.1)


def _remove_instance_cgroups(prefix: str) -> None:
    """The instance's parent cgroups (`<P>`, `<P>-monitors`) outlive its containers
    by design; a test's instance ends here, so they go (once conmons have exited)."""
    import time

    dirs = [
        d
        for ctl in Path("/sys/fs/cgroup").iterdir()
        for d in (ctl / prefix, ctl / f"{prefix}-monitors")
    ]
    deadline = time.monotonic() + 10
    while True:
        left = []
        for d in dirs:
            if d.is_dir():
                for child in sorted(d.glob("*/"), key=lambda x: -len(str(x))):
                    try:
                        child.rmdir()
                    except OSError:
                        pass
                try:
                    d.rmdir()
                except OSError:
                    left.append(d)
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.1)


@pytest.fixture
def eng_env(tmp_path):
    e = _new_env(tmp_path)
    yield e
    _teardown_env(e)


_BUSYBOX_CACHE: dict[str, Path] = {}


def add_host_netns(name: str) -> None:
    """A network namespace to stand for an engine's host: loopback up, and IPv4
    forwarding off as on a fresh machine (a new netns copies the real host's IPv4
    settings, so whatever another program set there would leak into the test)."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    subprocess.run(
        ["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True
    )


@pytest.fixture
def net_env(tmp_path):
    """An engine (with busybox) whose "host" is a network namespace this test made:
    bridges, veths, nftables and ip_forward change there, never on the real host."""
    e = _new_env(tmp_path)
    e.host_netns = f"{e.prefix}h"
    add_host_netns(e.host_netns)
    try:
        e.engine().bootstrap_image("busybox", None)
        yield e
    finally:
        _teardown_env(e)
        subprocess.run(["ip", "netns", "del", e.host_netns], check=False)


@pytest.fixture
def busybox_env(eng_env):
    """An engine whose store already holds busybox:latest."""
    eng_env.engine().bootstrap_image("busybox", None)
    return eng_env


def _leaks() -> list[str]:
    found = []
    prefixes = tuple(SESSION_PREFIXES)
    if not prefixes:
        return found
    roots = tuple(f"/{p}/" for p in prefixes)
    try:
        mi = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        mi = []
    for line in mi:
        mp = line.split()[4]
        if mp.startswith("/run/netns/") and mp.split("/")[-1].startswith(prefixes):
            found.append(f"netns {mp}")
        elif mp.startswith(tuple(SESSION_ROOTS)):
            found.append(f"mount {mp}")
    for ns in Path("/run/netns").glob("*") if Path("/run/netns").is_dir() else []:
        if ns.name.startswith(prefixes):
            found.append(f"netns file {ns}")
    for ctl in Path("/sys/fs/cgroup").glob("*"):
        for p in prefixes:
            for d in (ctl / p, ctl / f"{p}-monitors"):
                if d.is_dir():
                    found.append(f"cgroup {d}")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"conmon") and any(r.encode() in a for a in cmd for r in roots):
            found.append(f"conmon pid {pid}")
        if (
            b"engine.containers.health" in cmd
            or b"engine.network.ports" in cmd
            or b"engine.network.dns" in cmd
            or b"engine.containers.logkeeper" in cmd
        ) and any(r.encode() in a for a in cmd for r in SESSION_ROOTS):
            found.append(f"health runner pid {pid}")
    for p in prefixes:
        if Path(f"/run/{p}").exists():
            found.append(f"run dir /run/{p}")
    # Networks of a test engine live in its own "host" netns, never on the real host.
    for name in os.listdir("/sys/class/net"):
        if name.startswith(prefixes):
            found.append(f"link {name} on the real host")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    for line in tables.splitlines():
        if line.split()[-1:] and line.split()[-1].startswith(prefixes):
            found.append(f"nftables {line.strip()} on the real host")
    return found


def _servers_left(basetemp: Path) -> list[str]:
    """Processes (registries, Redis, Celery, Daphne, Chromium...) that tests started with
    a path under this session's tmp dir (or this session's CLI socket) and did not stop."""
    mark = str(basetemp).encode()
    me = os.getpid()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if mark in cmd:
            text = cmd.replace(b"\0", b" ")[:120].decode(errors="replace")
            found.append(f"process {pid}: {text}")
    return found


def stop_cli_server(sock: Path) -> None:
    """Stop the CLI server on ``sock`` (its pid is in the lock file), wait for it,
    and remove its socket and lock file (also when it had already gone)."""
    lock = sock.with_name(sock.name + ".lock")
    try:
        pid = int(lock.read_text().split()[0])
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        pid, cmd = 0, b""
    if pid and str(sock).encode() in cmd:  # else that pid is no longer our server
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    for f in (sock, lock):
        try:
            f.unlink()
        except FileNotFoundError:
            pass


def pytest_sessionfinish(session, exitstatus):
    stop_cli_server(CLI_SOCKET)
    if os.geteuid() != 0:
        return
    leaks = _leaks()
    try:
        basetemp = session.config._tmp_path_factory.getbasetemp()
    except Exception:  # no test asked for a tmp dir
        basetemp = None
    if basetemp is not None:
        deadline = time.monotonic() + 10  # a server may still be on its way out
        while (left := _servers_left(basetemp)) and time.monotonic() < deadline:
            time.sleep(0.2)
        leaks += left
    # A command that ran after the stop (a late exit command) would start another.
    leaks += [f"CLI server {p}" for p in _servers_left(CLI_SOCKET)]
    stop_cli_server(CLI_SOCKET)
    if leaks:
        print("\nLEAK CHECK FAILED: tests left behind:\n  " + "\n  ".join(leaks), file=sys.stderr)
        session.exitstatus = 1
