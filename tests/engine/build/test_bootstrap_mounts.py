"""debootstrap leaves mounts behind when it fails or is killed (/proc, /sys, device
binds in its target): the bootstrap must detach them before it deletes anything there,
or it would delete through them. A stand-in debootstrap on PATH leaves such mounts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engine.errors import EngineError
from engine.images.bootstrap import bootstrap_debian
from engine.images.store import ImageStore

pytestmark = pytest.mark.root

# The target is the next-to-last argument (suite TARGET MIRROR).
FAKE = """#!/bin/sh
eval target=\\${{$(($# - 1))}}
mkdir -p "$target/dev" "$target/proc" "$target/etc"
mount --bind {host} "$target/dev"
mount -t proc proc "$target/proc"
exit {code}
"""


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(str(root) + "/")]


@pytest.mark.parametrize("code", [1, 0])
def test_debootstrap_mounts_are_detached_before_anything_is_deleted(tmp_path, monkeypatch, code):
    host = tmp_path / "host-dev"
    host.mkdir()
    (host / "keep").write_text("a host file\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "debootstrap").write_text(FAKE.format(host=host, code=code))
    (bindir / "debootstrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin")
    store = ImageStore(tmp_path / "images", tmp_path / "locks")
    try:
        if code:
            with pytest.raises(EngineError, match="debootstrap bookworm failed"):
                bootstrap_debian(store, "fake:1")
        else:
            bootstrap_debian(store, "fake:1")
    finally:
        left = _mounts_under(tmp_path)
        for m in sorted(left, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
    assert left == []
    assert (host / "keep").read_text() == "a host file\n"


def test_a_killed_runs_work_dir_is_removed_without_deleting_through_its_mounts(
    tmp_path, monkeypatch
):
    from engine.images.bootstrap import cached_debian_archive

    host = tmp_path / "host-dev"
    host.mkdir()
    (host / "keep").write_text("a host file\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "debootstrap").write_text("#!/bin/sh\nexit 1\n")
    (bindir / "debootstrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin")
    cache = tmp_path / "cache"
    # What a run killed with -9 mid-debootstrap leaves: its work dir, a bind mount inside.
    dead = 999_999_999  # no such pid
    left_dev = cache / f".work-{dead}" / "images/tmp/debootstrap-x/rootfs/dev"
    left_dev.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(host), str(left_dev)], check=True)
    try:
        with pytest.raises(EngineError, match="debootstrap bookworm failed"):
            cached_debian_archive(cache, "fake:1", mirror="http://127.0.0.1:9/debian")
    finally:
        left = _mounts_under(tmp_path)
        for m in sorted(left, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
    assert left == []
    assert (host / "keep").read_text() == "a host file\n"
    assert not (cache / f".work-{dead}").exists()
