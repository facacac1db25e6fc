"""engine.safepath: every lookup stays inside the root, with openat2 and with the fallback walk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine import safepath
from engine.errors import EngineError, InvalidArgument, NotFound

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod)"),
    pytest.mark.usefixtures("both_resolvers"),
]


def snapshot(top: Path, root: Path) -> dict[str, bytes | str]:
    """Everything under ``top`` outside ``root``: name -> content (or link target)."""
    seen: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == root:
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            if p == root:
                continue
            if p.is_symlink():
                seen[str(p)] = "->" + os.readlink(p)
            elif p.is_file():
                seen[str(p)] = p.read_bytes()
            else:
                seen[str(p)] = "dir"
    return seen


@pytest.fixture
def env(tmp_path: Path):
    """A root and, beside it, a host directory with a sentinel the tests attack."""
    root = tmp_path / "root"
    host = tmp_path / "host"
    root.mkdir()
    host.mkdir()
    (host / "hostfile").write_bytes(b"HOST")
    before = snapshot(tmp_path, root)
    yield root, host
    assert snapshot(tmp_path, root) == before, "something outside the root changed"
    assert (host / "hostfile").read_bytes() == b"HOST"


def test_clean_path() -> None:
    assert safepath.clean_path("/../../etc/x") == "etc/x"
    assert safepath.clean_path("a/./b//c/..") == "a/b"
    assert safepath.clean_path("/") == ""
    assert safepath.clean_path("..") == ""


def test_planted_symlink_is_written_through_inside_root(env) -> None:
    root, host = env
    (root / "etc").mkdir()
    os.symlink(host / "hostfile", root / "etc/resolv.conf")
    # The link's target directory exists in the root: the write follows the link there.
    (root / str(host).lstrip("/")).mkdir(parents=True)
    safepath.write_file_in_root(root, "/etc/resolv.conf", b"nameserver 10.0.0.1\n")
    inside = root / str(host).lstrip("/") / "hostfile"
    assert inside.read_bytes() == b"nameserver 10.0.0.1\n"
    assert os.readlink(root / "etc/resolv.conf") == str(host / "hostfile")


def test_dangling_planted_symlink_is_replaced_not_followed(env) -> None:
    root, host = env
    (root / "etc").mkdir()
    os.symlink(host / "hostfile", root / "etc/resolv.conf")
    safepath.write_file_in_root(root, "/etc/resolv.conf", b"ns\n", mode=0o600)
    p = root / "etc/resolv.conf"
    assert not p.is_symlink() and p.read_bytes() == b"ns\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_follow_false_replaces_the_link(env) -> None:
    root, _ = env
    (root / "etc").mkdir()
    (root / "target").write_bytes(b"keep")
    os.symlink("/target", root / "etc/hosts")
    safepath.write_file_in_root(root, "etc/hosts", b"127.0.0.1 x\n", follow=False)
    assert (root / "target").read_bytes() == b"keep"
    assert (root / "etc/hosts").read_bytes() == b"127.0.0.1 x\n"


def test_dangling_link_with_existing_parent_creates_target_in_root(env) -> None:
    root, _ = env
    (root / "run").mkdir()
    os.symlink("/run/stub.conf", root / "resolv.conf")
    safepath.write_file_in_root(root, "resolv.conf", b"x")
    assert (root / "run/stub.conf").read_bytes() == b"x"
    assert (root / "resolv.conf").is_symlink()


def test_parent_symlinks_absolute_and_relative_stay_in_root(env) -> None:
    root, host = env
    os.symlink(host, root / "etc")  # etc -> /<tmp>/host
    os.symlink("../../../../..", root / "up")  # climbs far past the root
    # Dangling inside the root: refused (like runc's MkdirAllInRoot), host untouched.
    with pytest.raises(NotFound):
        safepath.write_file_in_root(root, "etc/hostname", b"ctr\n")
    (root / str(host).lstrip("/")).mkdir(parents=True)
    safepath.write_file_in_root(root, "etc/hostname", b"ctr\n")
    safepath.write_file_in_root(root, "up/up/evil", b"e")
    safepath.write_file_in_root(root, "../../../evil2", b"e")
    assert (root / str(host).lstrip("/") / "hostname").read_bytes() == b"ctr\n"
    assert (root / "evil").read_bytes() == b"e"
    assert (root / "evil2").read_bytes() == b"e"
    assert not (host / "hostname").exists()


def test_mkdirs_through_symlink_to_host(env) -> None:
    root, host = env
    os.symlink(host, root / "data")
    with pytest.raises(NotFound):  # dangling in the root
        safepath.mkdirs_in_root(root, "/data/sub/deeper")
    (root / str(host).lstrip("/")).mkdir(parents=True)
    safepath.mkdirs_in_root(root, "/data/sub/deeper", mode=0o750)
    made = root / str(host).lstrip("/") / "sub/deeper"
    assert made.is_dir()
    assert stat.S_IMODE(made.stat().st_mode) == 0o750
    assert not (host / "sub").exists()


def test_mkdirs_refuses_a_file_component(env) -> None:
    root, _ = env
    (root / "f").write_bytes(b"")
    with pytest.raises(InvalidArgument):
        safepath.mkdirs_in_root(root, "f/sub")


def test_read_resolve_stat_never_leave_root(env) -> None:
    root, host = env
    os.symlink(host / "hostfile", root / "leak")
    with pytest.raises(NotFound):
        safepath.read_file_in_root(root, "leak")
    assert not safepath.exists_in_root(root, "leak")
    assert safepath.exists_in_root(root, "leak", follow=False)
    assert stat.S_ISLNK(safepath.lstat_in_root(root, "leak").st_mode)
    with pytest.raises(NotFound):
        safepath.stat_in_root(root, "leak")
    # Once the mirrored path exists in the root, that is what every call sees.
    mirror = root / str(host).lstrip("/")
    mirror.mkdir(parents=True)
    (mirror / "hostfile").write_bytes(b"inside")
    assert safepath.read_file_in_root(root, "/leak") == b"inside"
    assert safepath.resolve_in_root(root, "leak") == mirror / "hostfile"
    assert safepath.resolve_in_root(root, "../../..") == root
    assert safepath.resolve_in_root(root, "leak", follow=False) == root / "leak"


def test_open_in_root_accepts_an_fd(env) -> None:
    root, _ = env
    (root / "a").mkdir()
    (root / "a/b").write_bytes(b"x")
    rfd = safepath.open_root(root)
    try:
        fd = safepath.open_in_root(rfd, "/a/../a/b", os.O_RDONLY)
        assert os.read(fd, 10) == b"x"
        os.close(fd)
        os.fstat(rfd)  # still open: fds passed in are not closed
    finally:
        os.close(rfd)


def test_symlink_loop_is_an_error(env) -> None:
    root, _ = env
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    with pytest.raises(InvalidArgument):
        safepath.read_file_in_root(root, "a")
    with pytest.raises(InvalidArgument):
        safepath.write_file_in_root(root, "a/x", b"")


def test_fifo_is_refused_without_blocking(env) -> None:
    root, _ = env
    os.mkfifo(root / "fifo")
    with pytest.raises(InvalidArgument):
        safepath.read_file_in_root(root, "fifo")
    with pytest.raises(InvalidArgument):
        safepath.write_file_in_root(root, "fifo", b"x")


def test_write_sets_owner_and_mode_and_truncates(env) -> None:
    root, _ = env
    safepath.write_file_in_root(root, "etc/x", b"long content")
    safepath.write_file_in_root(root, "etc/x", b"short", mode=0o4755, uid=1000, gid=1001)
    st = (root / "etc/x").stat()
    assert (root / "etc/x").read_bytes() == b"short"
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert stat.S_IMODE(st.st_mode) == 0o4755  # setuid survives the chown
    with pytest.raises(InvalidArgument):
        safepath.write_file_in_root(root, "/", b"")
    with pytest.raises(InvalidArgument):
        safepath.write_file_in_root(root, "etc", b"")


def test_missing_root_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        safepath.open_root(tmp_path / "nope")
    with pytest.raises(EngineError):
        safepath.read_file_in_root(tmp_path / "nope", "x")
