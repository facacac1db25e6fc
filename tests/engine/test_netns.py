"""engine.netns against the real kernel: named namespaces in /run/netns.

Every namespace is named ``bt-<random hex>`` and the fixture deletes it even
when the test fails; the host's own namespace is only looked at.
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine import netns
from engine.errors import Conflict, EngineError, InvalidArgument, NotFound

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


def _host_mounts_on(path: Path) -> list[str]:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if line.split()[4] == target]


@pytest.fixture
def ns_name() -> Iterator[Callable[[], str]]:
    """Hands out fresh names and deletes all of them afterwards."""
    made: list[str] = []

    def new() -> str:
        name = f"bt-{secrets.token_hex(5)}"
        made.append(name)
        return name

    yield new
    for name in made:
        netns.delete_netns(name)
        assert not (netns.NETNS_DIR / name).exists()
        assert not _host_mounts_on(netns.NETNS_DIR / name)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def test_create_is_a_real_named_namespace(ns_name: Callable[[], str]) -> None:
    name = ns_name()
    path = netns.create_netns(name)
    assert path == Path("/run/netns") / name == netns.netns_path(name)
    assert path.exists()
    assert _host_mounts_on(path), "expected an nsfs bind mount"
    assert name in _ip("netns", "list")

    links = _ip("netns", "exec", name, "ip", "-o", "link").strip().splitlines()
    assert len(links) == 1, links
    assert ": lo:" in links[0]
    assert "UP" in links[0].split("<", 1)[1].split(">", 1)[0].split(",")
    assert netns.loopback_state(path) is True

    assert netns.netns_inode(path) != netns.netns_inode("/proc/self/ns/net")
    assert netns.netns_inode(path) == netns.run_in_netns(
        path, lambda: os.stat("/proc/self/ns/net").st_ino
    )
    assert name in netns.list_netns("bt-")
    assert netns.list_netns(name) == [name]


def test_create_without_lo(ns_name: Callable[[], str]) -> None:
    path = netns.create_netns(ns_name(), lo_up=False)
    assert netns.loopback_state(path) is False


def test_loopback_works_inside(ns_name: Callable[[], str]) -> None:
    path = netns.create_netns(ns_name())

    def echo() -> bytes:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
        ):
            a.bind(("127.0.0.1", 0))
            b.sendto(b"hi", a.getsockname())
            a.settimeout(2)
            return a.recv(16)

    assert netns.run_in_netns(path, echo) == b"hi"


def test_delete_is_idempotent(ns_name: Callable[[], str]) -> None:
    name = ns_name()
    path = netns.create_netns(name)
    netns.delete_netns(name)
    assert not path.exists()
    assert not _host_mounts_on(path)
    netns.delete_netns(name)
    assert name not in netns.list_netns("bt-")


def test_delete_heals_a_stale_file(ns_name: Callable[[], str]) -> None:
    # What a crash between creating the file and mounting leaves behind.
    name = ns_name()
    path = netns.NETNS_DIR / name
    path.touch()
    with pytest.raises(Conflict):
        netns.create_netns(name)
    netns.delete_netns(name)
    assert not path.exists()
    netns.create_netns(name)


def test_existing_name_conflicts(ns_name: Callable[[], str]) -> None:
    name = ns_name()
    path = netns.create_netns(name)
    inode = netns.netns_inode(path)
    with pytest.raises(Conflict) as exc:
        netns.create_netns(name)
    assert exc.value.obj == name
    # The existing namespace is untouched.
    assert netns.netns_inode(path) == inode
    assert len(_host_mounts_on(path)) == 1


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "-x", ".hidden", "a b", "x" * 256])
def test_invalid_names_leave_nothing(bad: str) -> None:
    before = sorted(os.listdir(netns.NETNS_DIR))
    with pytest.raises(InvalidArgument):
        netns.create_netns(bad)
    with pytest.raises(InvalidArgument):
        netns.delete_netns(bad)
    assert sorted(os.listdir(netns.NETNS_DIR)) == before


def test_failure_in_helper_thread_leaves_nothing(
    ns_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Make the helper thread's bind mount fail: the mount source does not exist.
    name = ns_name()
    real_mount = netns._mount

    def broken(src: bytes | None, dst: bytes, fstype: bytes | None, flags: int) -> int:
        if src == b"/proc/thread-self/ns/net":
            src = b"/proc/self/ns/does-not-exist"
        return real_mount(src, dst, fstype, flags)

    monkeypatch.setattr(netns, "_mount", broken)
    with pytest.raises(EngineError) as exc:
        netns.create_netns(name)
    assert "bind-mount" in str(exc.value)
    assert exc.value.errno == 2
    assert not (netns.NETNS_DIR / name).exists()
    assert not _host_mounts_on(netns.NETNS_DIR / name)


def test_failure_after_mount_leaves_nothing(
    ns_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The helper thread succeeded (the mount exists), then the caller is interrupted.
    name = ns_name()
    real = netns._create_in_thread

    def boom(target: bytes, lo_up: bool) -> tuple[int, int]:
        assert real(target, lo_up) == (0, 0)
        raise KeyboardInterrupt

    monkeypatch.setattr(netns, "_create_in_thread", boom)
    with pytest.raises(KeyboardInterrupt):
        netns.create_netns(name)
    assert not (netns.NETNS_DIR / name).exists()
    assert not _host_mounts_on(netns.NETNS_DIR / name)


def test_create_leaves_every_thread_of_the_caller_in_its_namespace(
    ns_name: Callable[[], str],
) -> None:
    own = os.readlink("/proc/thread-self/ns/net")
    path = netns.create_netns(ns_name())
    # The helper thread went back before ending (it may still be listed for a moment).
    tasks = {os.readlink(f"/proc/self/task/{t}/ns/net") for t in os.listdir("/proc/self/task")}
    assert tasks == {own}
    assert f"net:[{netns.netns_inode(path)}]" != own
    assert netns.loopback_state(path) is True


def test_run_in_netns_values_and_exceptions(ns_name: Callable[[], str]) -> None:
    path = netns.create_netns(ns_name())
    own_ns = os.readlink("/proc/self/ns/net")
    assert netns.run_in_netns(path, lambda: {"a": [1, 2], "b": None}) == {"a": [1, 2], "b": None}
    big = netns.run_in_netns(path, lambda: b"x" * (4 << 20))  # larger than a pipe buffer
    assert len(big) == 4 << 20
    # The child's pid differs: fn did not run here.
    assert netns.run_in_netns(path, os.getpid) != os.getpid()

    def fails() -> None:
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        netns.run_in_netns(path, fails)

    def raises_engine_error() -> None:
        raise Conflict("taken", obj="thing", errno=17)

    with pytest.raises(Conflict) as exc:
        netns.run_in_netns(path, raises_engine_error)
    assert (exc.value.obj, exc.value.errno) == ("thing", 17)

    def exits() -> None:
        sys.exit(3)

    with pytest.raises(EngineError, match="SystemExit"):
        netns.run_in_netns(path, exits)

    with pytest.raises(EngineError, match="cannot send result"):
        netns.run_in_netns(path, lambda: lambda: None)  # a lambda does not pickle

    # The calling process never moved.
    assert os.readlink("/proc/self/ns/net") == own_ns


def test_run_in_missing_netns() -> None:
    with pytest.raises(NotFound):
        netns.run_in_netns(netns.NETNS_DIR / f"bt-{secrets.token_hex(5)}", os.getpid)


def test_netns_dir_is_a_shared_mount() -> None:
    netns._ensure_netns_dir()
    mounts = _host_mounts_on(netns.NETNS_DIR)
    assert mounts
    assert any("shared:" in line.split(" - ")[0] for line in mounts)


def test_timing(ns_name: Callable[[], str]) -> None:
    netns.create_netns(ns_name())  # warm: the shared-mount setup happens once
    creates, deletes = [], []
    for _ in range(20):
        name = ns_name()
        t0 = time.perf_counter()
        netns.create_netns(name)
        t1 = time.perf_counter()
        netns.delete_netns(name)
        t2 = time.perf_counter()
        creates.append(t1 - t0)
        deletes.append(t2 - t1)
    print(
        f"\nnetns create median {statistics.median(creates) * 1e3:.2f} ms, "
        f"delete median {statistics.median(deletes) * 1e3:.2f} ms (n=20)"
    )


def test_concurrent_creates_from_threads(ns_name: Callable[[], str]) -> None:
    # The dashboard and Celery workers are threaded: fork from many threads at
    # once, and let two of them race for one name (exactly one wins).
    names = [ns_name() for _ in range(8)]
    contested = names[0]
    results: dict[int, object] = {}

    def work(i: int) -> None:
        try:
            results[i] = netns.create_netns(names[i] if i < 8 else contested)
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(isinstance(results[i], Path) for i in range(1, 8)), results
    outcomes = [results[0], results[8]]
    assert sum(isinstance(r, Path) for r in outcomes) == 1, outcomes
    assert sum(isinstance(r, Conflict) for r in outcomes) == 1, outcomes
    assert len({netns.netns_inode(netns.netns_path(n)) for n in names}) == 8
    assert all(netns.loopback_state(netns.netns_path(n)) for n in names)


_FRESH_DIR_SCRIPT = """
import sys
import threading
from pathlib import Path
from engine import netns

netns.NETNS_DIR = Path(sys.argv[1])
p = netns.create_netns("bt-fresh")
mounts = [l for l in open("/proc/self/mountinfo") if l.split()[4] == sys.argv[1]]
assert mounts and "shared:" in mounts[0].split(" - ")[0], mounts
assert netns.loopback_state(p)
netns.delete_netns("bt-fresh")
assert not p.exists()
print("ok")
"""


def test_makes_a_fresh_dir_a_shared_mount(tmp_path: Path) -> None:
    # The "/run/netns is not a mount yet" path, in a private mount namespace
    # with a directory of the test's own, so the host's mounts are never touched.
    target = tmp_path / "netns"
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _FRESH_DIR_SCRIPT]
        + [str(target)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert not _host_mounts_on(target)
