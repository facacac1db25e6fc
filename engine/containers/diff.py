"""``diff``: what changed in a container's filesystem, read from its overlay upper dir.

Everything in the upper dir is a change: a char 0:0 device is a deleted file
(D), a name the image also has is a change (C), anything else an addition (A).
An opaque directory hides the image's contents of that directory: those are
reported deleted. The parent of an added or deleted entry is reported changed
(Docker does the same), but a directory that overlay merely copied up to hold a
changed child is only listed once. Nothing is followed: the walk uses
``O_NOFOLLOW`` fds and ``lstat`` relative to them.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

from engine.containers.records import Container, Paths
from engine.images.layers import OPAQUE_XATTR
from engine.safepath import open_in_root

KIND_CHANGED, KIND_ADDED, KIND_DELETED = 0, 1, 2  # Docker API's Kind values
KIND_LETTER = {KIND_CHANGED: "C", KIND_ADDED: "A", KIND_DELETED: "D"}


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(f"/proc/self/fd/{fd}", OPAQUE_XATTR) == b"y"
    except OSError:
        return False


class _Lower:
    """The image's merged view (layers top first), answered by lookups in the layer dirs."""

    def __init__(self, layer_dirs: list[Path]):
        self.layers = list(reversed(layer_dirs))

    def lstat(self, rel: str) -> os.stat_result | None:
        """The entry the image shows at ``rel`` (None: absent or deleted by a layer)."""
        for layer in self.layers:
            found, stop = self._in_layer(layer, rel.split("/"))
            if found is not None:
                return None if _is_whiteout(found) else found
            if stop:
                return None
        return None

    @staticmethod
    def _in_layer(layer: Path, parts: list[str]) -> tuple[os.stat_result | None, bool]:
        """(the entry in this layer, whether lower layers are hidden at this path).

        Walked one name at a time with O_NOFOLLOW, as overlayfs looks names up:
        a symlink, file or whiteout on the way hides the lower layers' paths.
        """
        try:
            fd = os.open(layer, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None, False
        try:
            for i, name in enumerate(parts):
                try:
                    nfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except FileNotFoundError:
                    return None, False
                except OSError:
                    return None, True
                os.close(fd)
                fd = nfd
                st = os.fstat(fd)
                if i == len(parts) - 1:
                    return st, True
                if not stat.S_ISDIR(st.st_mode):
                    return None, True  # a whiteout, file or link replaces the directory
                if _opaque(fd):
                    # Below an opaque dir only this layer counts.
                    return _Lower._rest(fd, parts[i + 1 :]), True
            return None, False
        finally:
            os.close(fd)

    @staticmethod
    def _rest(fd: int, parts: list[str]) -> os.stat_result | None:
        st, _ = _Lower._in_layer(Path(f"/proc/self/fd/{fd}"), parts)
        return st

    def children(self, rel: str) -> set[str]:
        names: set[str] = set()
        gone: set[str] = set()
        for layer in self.layers:
            try:
                fd = open_in_root(layer, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                for name in os.listdir(fd):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if name in names or name in gone:
                        continue
                    (gone if _is_whiteout(st) else names).add(name)
                if _opaque(fd):
                    break
            finally:
                os.close(fd)
        return names


def changes(
    upper: Path, layer_dirs: list[Path], ignore: frozenset[str] = frozenset()
) -> list[dict]:
    """``[{"Path": "/etc/x", "Kind": 0|1|2}, ...]`` sorted by path, as Docker's API.

    ``ignore``: paths (relative, no leading "/") where the runtime made empty
    mount points (``/etc/hosts``...): not the user's changes (Docker keeps them
    in a separate init layer).
    """
    lower = _Lower(layer_dirs)
    out: dict[str, int] = {}
    try:
        top = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    stack = [(top, "")]
    try:
        while stack:
            dfd, prefix = stack.pop()
            try:
                for name in sorted(os.listdir(dfd)):
                    rel = posixpath.join(prefix, name) if prefix else name
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    below = lower.lstat(rel)
                    is_dir = stat.S_ISDIR(st.st_mode)
                    if _is_whiteout(st):
                        if below is not None:
                            out[rel] = KIND_DELETED
                        continue
                    if below is None and rel in ignore and _empty(dfd, name, st):
                        continue
                    if below is None:
                        out[rel] = KIND_ADDED
                    elif not (is_dir and stat.S_ISDIR(below.st_mode)):
                        out[rel] = KIND_CHANGED
                    elif (st.st_mode, st.st_uid, st.st_gid) != (
                        below.st_mode,
                        below.st_uid,
                        below.st_gid,
                    ):
                        out[rel] = KIND_CHANGED
                    if is_dir:
                        cfd = os.open(
                            name,
                            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=dfd,
                        )
                        if below is not None and stat.S_ISDIR(below.st_mode) and _opaque(cfd):
                            # Opaque: the image's entries here are hidden unless re-created.
                            present = set(os.listdir(cfd))
                            for gone in lower.children(rel) - present:
                                out[posixpath.join(rel, gone)] = KIND_DELETED
                        stack.append((cfd, rel))
            finally:
                os.close(dfd)
    finally:
        for fd, _ in stack:
            os.close(fd)
    # The directories holding a change are changed too (Docker lists them).
    for rel in list(out):
        parent = posixpath.dirname(rel)
        while parent and parent not in out:
            out[parent] = KIND_CHANGED
            parent = posixpath.dirname(parent)
    return [{"Path": "/" + p, "Kind": k} for p, k in sorted(out.items())]


def _empty(dfd: int, name: str, st: os.stat_result) -> bool:
    if stat.S_ISREG(st.st_mode):
        return st.st_size == 0
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            return not os.listdir(fd)
        finally:
            os.close(fd)
    return False


def mount_points(c: Container) -> frozenset[str]:
    """Where the runtime may have created empty mount targets in the rootfs."""
    targets = {"etc/hosts", "etc/hostname", "etc/resolv.conf", "dev", "proc", "sys", "dev/shm"}
    targets |= {m.target.strip("/") for m in c.opts.mounts}
    targets |= {v.strip("/") for v in c.image_volumes}
    for t in c.opts.tmpfs:
        targets.add(t.split(":", 1)[0].strip("/"))
    return frozenset(targets)


def container_changes(eng, c: Container) -> list[dict]:
    p = Paths(eng.config, c.id)
    layers = eng.images.layer_dirs(eng.images.get_by_id(c.image_id))
    return changes(p.upper, layers, mount_points(c))


__all__ = ["KIND_LETTER", "changes", "container_changes", "mount_points"]
