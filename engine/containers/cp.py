"""``cp`` and ``export``: tar streams in and out of a container's filesystem.

The container's files are reached through its overlay mount (``merged``): a
running container has it mounted already; for a created or exited one we mount
it for the length of the operation, under the container's lock so that a
concurrent ``start`` (which mounts the same upper dir) waits for us. Every
path inside is resolved by :mod:`engine.images.layers`/:mod:`engine.safepath`
as if the rootfs were ``/``, so a link planted in the container
(``/etc/passwd -> /host/file``) can neither read nor write the host.

Docker's ``cp`` rules (file vs directory, trailing ``/`` and ``/.``, renaming
to a new name) are decided by :func:`plan_copy`, shared by both directions; a
rename is done by rewriting the entry names of the tar stream (:func:`rebase`).
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engine import mounts
from engine.containers import records
from engine.containers.records import Container, Paths
from engine.errors import EngineError, InvalidArgument, NotFound
from engine.locks import file_lock
from engine.runtime.oci import pid_alive
from engine.safepath import clean_path, open_in_root, wrap_oserror


@contextmanager
def rootfs(eng, c: Container) -> Iterator[Path]:
    """The container's merged rootfs, mounted for the duration if it is not running."""
    p = Paths(eng.config, c.id)
    with file_lock(p.lock):
        cur = records.load(eng.db, c.id)
        if cur.state in records.ACTIVE and pid_alive(cur.pid) and mounts.is_mountpoint(p.merged):
            yield p.merged
            return
        if cur.state in ("removing",):
            raise NotFound(f"No such container: {c.name}", obj=c.name)
        lower = eng.images.layer_dirs(eng.images.get_by_id(cur.image_id))
        from engine.containers.lifecycle import prepare_overlay

        prepare_overlay(p, volatile=False)  # files copied in must stay until it runs
        mounts.mount_overlay(lower, p.upper, p.work, p.merged)
        try:
            yield p.merged
        finally:
            mounts.umount(str(p.merged))


# -- stat and resolution inside the root -----------------------------------------------------


@dataclass
class PathStat:
    name: str
    size: int
    mode: int
    mtime: float
    link_target: str  # the in-root path a final symlink resolves to ("" if none)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "linkTarget": self.link_target,
        }


def _lstat(root: str | Path, path: str, follow: bool) -> os.stat_result:
    try:
        fd = open_in_root(root, clean_path(path), os.O_PATH | (0 if follow else os.O_NOFOLLOW))
    except OSError as e:
        raise wrap_oserror(e, path) from None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def resolve_link(root: str | Path, path: str, limit: int = 40) -> str:
    """The in-root path ``path`` names after following final symlinks (lexically
    for the target: it may not exist). Only a name: writes still go through fds."""
    cur = "/" + clean_path(path)
    for _ in range(limit):
        try:
            st = _lstat(root, cur, follow=False)
        except NotFound:
            return cur
        if not stat.S_ISLNK(st.st_mode):
            return cur
        fd = open_in_root(root, clean_path(cur), os.O_PATH | os.O_NOFOLLOW)
        try:
            target = os.readlink("", dir_fd=fd)
        finally:
            os.close(fd)
        base = posixpath.dirname(cur)
        cur = "/" + clean_path(target if target.startswith("/") else posixpath.join(base, target))
    raise InvalidArgument(f"{path}: too many levels of symbolic links", obj=path)


def stat_path(root: str | Path, path: str, follow: bool = False) -> PathStat:
    """Docker's ``HEAD /archive``: the entry itself unless ``follow``; a link's target named."""
    st = _lstat(root, path, follow=follow)
    target = resolve_link(root, path) if stat.S_ISLNK(st.st_mode) else ""
    return PathStat(
        posixpath.basename(clean_path(path)) or "/", st.st_size, st.st_mode, st.st_mtime, target
    )


# -- Docker's copy rules ------------------------------------------------------------------


@dataclass
class CopyPlan:
    extract_dir: str  # the existing directory the tar is extracted into
    rebase_from: str  # first path component of the entries ("" = no rename)
    rebase_to: str

    @property
    def needs_rebase(self) -> bool:
        return bool(self.rebase_to) and self.rebase_from != self.rebase_to


def plan_copy(
    src_path: str, src_is_dir: bool, dst_path: str, dst_exists: bool, dst_is_dir: bool
) -> CopyPlan:
    """Where a tar of ``src_path`` (named after its basename, or its contents for
    ``dir/.``) lands for destination ``dst_path``, following ``docker cp``."""
    contents_only = src_is_dir and (src_path.endswith("/.") or src_path in (".", "/"))
    src_base = posixpath.basename(posixpath.normpath(src_path)) if not contents_only else ""
    if not src_is_dir and src_path.endswith("/"):
        raise InvalidArgument(f"{src_path}: not a directory", obj=src_path)
    dst_trailing = dst_path.endswith("/") or dst_path.endswith("/.")
    norm_dst = posixpath.normpath(dst_path) if dst_path not in ("", ".") else "."
    if dst_exists and dst_is_dir:
        return CopyPlan(norm_dst, "", "")
    if dst_exists:  # a file
        if src_is_dir:
            raise InvalidArgument(f"cannot copy a directory to a file: {dst_path}", obj=dst_path)
        if dst_trailing:
            raise InvalidArgument(f"destination {dst_path} is not a directory", obj=dst_path)
        return CopyPlan(posixpath.dirname(norm_dst) or ".", src_base, posixpath.basename(norm_dst))
    if dst_trailing and not src_is_dir:
        raise NotFound(f"destination directory {dst_path} does not exist", obj=dst_path)
    return CopyPlan(posixpath.dirname(norm_dst) or ".", src_base, posixpath.basename(norm_dst))


def rebase(src: BinaryIO, out: BinaryIO, old: str, new: str) -> None:
    """Copy a tar stream renaming its first path component ``old`` to ``new``
    (``old == ""``: a contents-only tar, put under ``new/``)."""
    with (
        tarfile.open(fileobj=src, mode="r|") as tin,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tout,
    ):
        if not old:
            root = tarfile.TarInfo(new)
            root.type, root.mode = tarfile.DIRTYPE, 0o755
            tout.addfile(root)
        for m in tin:
            m.name = _rebased(m.name, old, new)
            if m.islnk():
                m.linkname = _rebased(m.linkname, old, new)
            # A pax "path"/"linkpath" header would override the new names.
            m.pax_headers = {
                k: v for k, v in m.pax_headers.items() if k not in ("path", "linkpath")
            }
            tout.addfile(m, tin.extractfile(m) if m.isreg() else None)


def _rebased(name: str, old: str, new: str) -> str:
    name = clean_path(name)
    if not old:
        return posixpath.join(new, name) if name else new
    if name == old or name.startswith(old + "/"):
        return new + name[len(old) :]
    return name


# -- streaming between a writer and a reader ---------------------------------------------


@contextmanager
def piped(writer: Callable[[BinaryIO], None]) -> Iterator[BinaryIO]:
    """Run ``writer(stream)`` in a thread; yield the reading end. The writer's
    error (if any) is raised when the block ends."""
    r, w = os.pipe()
    rf, wf = os.fdopen(r, "rb"), os.fdopen(w, "wb")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            writer(wf)
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)
        finally:
            try:
                wf.close()
            except OSError:
                pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield rf
        # Drain so the writer never blocks on a full pipe after we stopped reading.
        while rf.read(1 << 16):
            pass
    finally:
        rf.close()
        t.join()
    if errors:
        raise errors[0]


def copy_host_to_container(
    eng, c: Container, host_src: str, ctr_dst: str, *, archive: bool = False
) -> None:
    """``berth cp HOST_SRC CTR:DST``. The host side is the user's own: read as is."""
    from engine.images import layers

    src = host_src
    try:
        src_st = os.stat(src) if src.endswith("/") else os.lstat(src)
    except OSError as e:
        raise NotFound(
            f"could not find the file {host_src} on the host: {e.strerror}", obj=host_src
        ) from None
    with rootfs(eng, c) as root:
        dst = ctr_dst
        try:
            dst_st = stat_path(root, dst)
            if stat.S_ISLNK(dst_st.mode):  # Docker writes through a link: inside the root
                dst = dst_st.link_target + ("/" if dst.endswith("/") else "")
                dst_st = stat_path(root, dst)
            exists, is_dir = True, dst_st.is_dir
        except NotFound:
            exists, is_dir = False, False
        plan = plan_copy(src, stat.S_ISDIR(src_st.st_mode), dst, exists, is_dir)
        # layers.copy_out with "/" as the root reads the host path plainly (dir/. included).
        with piped(lambda out: layers.copy_out("/", os.path.abspath(src) + _dot(src), out)) as tar:
            if plan.needs_rebase:
                with piped(
                    lambda out: rebase(tar, out, plan.rebase_from, plan.rebase_to)
                ) as renamed:
                    layers.copy_in(root, plan.extract_dir, renamed, preserve_owner=archive)
            else:
                layers.copy_in(root, plan.extract_dir, tar, preserve_owner=archive)


def copy_container_to_host(
    eng, c: Container, ctr_src: str, host_dst: str, *, follow: bool = False
) -> None:
    """``berth cp CTR:SRC HOST_DST``: the tar from inside the root, extracted on the host."""
    from engine.images import layers

    with rootfs(eng, c) as root:
        src_st = stat_path(root, ctr_src, follow=follow or ctr_src.endswith("/"))
        src_is_dir = src_st.is_dir
        try:
            dst_st = os.stat(host_dst)
            exists, is_dir = True, stat.S_ISDIR(dst_st.st_mode)
        except FileNotFoundError:
            exists, is_dir = False, False
        plan = plan_copy(ctr_src, src_is_dir, host_dst, exists, is_dir)
        if not os.path.isdir(plan.extract_dir):
            raise NotFound(
                f"destination directory {plan.extract_dir} does not exist", obj=plan.extract_dir
            )
        with piped(lambda out: layers.copy_out(root, ctr_src, out, follow_link=follow)) as tar:
            if plan.rebase_to and plan.rebase_to != plan.rebase_from:
                with piped(
                    lambda out: rebase(tar, out, plan.rebase_from, plan.rebase_to)
                ) as renamed:
                    layers.copy_in("/", os.path.abspath(plan.extract_dir), renamed)
            else:
                layers.copy_in("/", os.path.abspath(plan.extract_dir), tar)


def _dot(src: str) -> str:
    # os.path.abspath drops a trailing "/." that means "the contents" to docker.
    return "/." if src.endswith("/.") or src == "." else ""


def check_container_path(path: str) -> str:
    if not path:
        raise InvalidArgument("the path inside the container must not be empty")
    return path if path.startswith("/") else "/" + path


__all__ = [
    "EngineError",
    "copy_container_to_host",
    "copy_host_to_container",
    "plan_copy",
    "rebase",
    "rootfs",
]
