"""Scratch space of a build, and an image's filesystem mounted to read or to change.

Everything lives under ``<root>/build/tmp/<random>``; the directory holds a
lock file that its builder keeps locked (flock) for as long as it lives, so a
later build can tell a crashed builder's leftovers (lock free: unmount and
delete) from another build in progress (lock held: leave it alone).

:class:`ImageFS` mounts an image's layers with overlayfs (a fresh upper dir on
top); COPY/ADD/WORKDIR write into ``root`` through :mod:`engine.safepath`
(so the image's own symlinks are followed inside the image), and
:meth:`ImageFS.commit` turns the upper dir into a layer blob, exactly as a
container's upper dir becomes a layer on commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine import mounts

if TYPE_CHECKING:
    from engine.images.store import ImageStore

_LOCK = ".lock"


class Workspace:
    """One build's scratch directory (``<root>/build/tmp/<id>``), locked while in use."""

    def __init__(self, build_root: Path):
        self.base = build_root / "tmp"
        self.base.mkdir(parents=True, exist_ok=True)
        name = os.urandom(8).hex()  # not uuid: its import costs ~2 ms on every build
        # Made under a hidden name and renamed once locked, so another build's
        # clean-up never sees it unlocked.
        new = self.base / f".new-{name}"
        new.mkdir()
        self._fd = os.open(new / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.dir = self.base / name
        os.rename(new, self.dir)
        self._n = 0

    def new_dir(self, kind: str) -> Path:
        self._n += 1
        d = self.dir / f"{kind}{self._n}"
        d.mkdir()
        return d

    def close(self) -> None:
        _remove_tree(self.dir)
        os.close(self._fd)

    @staticmethod
    def remove_stale(build_root: Path) -> None:
        """Remove what crashed builds left (their locks are free), mounts first."""
        base = build_root / "tmp"
        if not base.is_dir():
            return
        for d in base.iterdir():
            if d.name.startswith(".new-"):
                with contextlib.suppress(OSError):
                    if time.time() - d.stat().st_mtime > 3600:  # a crash before the rename
                        _remove_tree(d)
                continue
            try:
                fd = os.open(d / _LOCK, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None
            except OSError:
                continue
            try:
                if fd is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live build
                _remove_tree(d)
            finally:
                if fd is not None:
                    os.close(fd)


def detach_mounts_below(d: Path) -> None:
    """Detach every mount below ``d``, deepest first, so that deleting ``d`` never
    deletes through a mount (a crash between mount and umount, a tool's leftovers)."""
    prefix = str(d) + "/"
    targets = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            # mountinfo escapes blanks and backslashes in paths as octal (\040...).
            target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if target.startswith(prefix):
                targets.append(target)
    for t in sorted(targets, key=len, reverse=True):
        mounts.umount(t)


def _remove_tree(d: Path) -> None:
    detach_mounts_below(d)
    shutil.rmtree(d, ignore_errors=True)


class ImageFS:
    """An image's filesystem (its layer dirs, lowest first) mounted writable at ``root``."""

    def __init__(self, ws: Workspace, layer_dirs: list[Path]):
        self.dir = ws.new_dir("fs")
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.root = self.dir / "merged"
        for d in (self.upper, self.work, self.root):
            d.mkdir()
        lower = list(layer_dirs)
        if not lower:  # scratch: overlay needs a lower dir
            empty = self.dir / "empty"
            empty.mkdir()
            lower = [empty]
        mounts.mount_overlay(lower, self.upper, self.work, self.root)
        self.mounted = True

    def __enter__(self) -> ImageFS:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def unmount(self) -> None:
        if self.mounted:
            mounts.umount(str(self.root))
            self.mounted = False

    def commit(self, store: ImageStore, always: bool = False) -> tuple[str, int] | None:
        """The changes as a layer blob in ``store``: (diff ID, size), or None if
        nothing changed (unless ``always``: COPY/ADD make a layer even then, as in Docker)."""
        self.unmount()
        if not always and not any(self.upper.iterdir()):
            return None
        return commit_upper(store, self.upper)

    def close(self) -> None:
        self.unmount()
        shutil.rmtree(self.dir, ignore_errors=True)


def commit_upper(
    store: ImageStore, upper: Path, drop: frozenset[str] = frozenset()
) -> tuple[str, int]:
    """An overlay upper dir as a layer blob (whiteouts as ``.wh.``), minus ``drop`` paths."""
    from engine.containers.commit import _filter
    from engine.containers.cp import piped
    from engine.images import layers as layer_tars  # tarfile: only when a layer is made
    from engine.images.content import check_digest

    with store.writing():
        with piped(lambda out: layer_tars.diff_to_tar(upper, out)) as raw:
            if drop:
                with piped(lambda out: _filter(raw, out, set(drop))) as tar:
                    digest, size = store.blobs.put_stream(tar)
            else:
                digest, size = store.blobs.put_stream(raw)
    return check_digest(digest), size
