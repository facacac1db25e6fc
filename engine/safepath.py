"""Resolve and create paths *inside* a root filesystem, never outside it.

A container's rootfs is hostile data: any component of a path we are asked to
touch may be a symlink (``etc -> /``, ``resolv.conf -> /host/file``,
``x -> ../../..``) planted by an image or by a running container. Joining the
rootfs path with the container path and calling ``open()`` on the host would
follow those links on the host. Instead every lookup here is done relative to
a file descriptor of the root, with symlinks and ``..`` resolved *as if the
root were ``/``* -- the semantics of ``openat2(2)`` with ``RESOLVE_IN_ROOT``,
which the kernel enforces atomically (no check-then-use race with a container
swapping links under us). Where the kernel lacks ``openat2`` (ENOSYS, < 5.6)
a userspace walk with ``O_PATH|O_NOFOLLOW`` per component gives the same
answer (without the kernel's race protection against concurrent renames).

``root`` arguments are a path or an already-open directory fd (``O_PATH`` is
enough); fds passed in are never closed here.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import EngineError, InvalidArgument, NotFound

RootLike = int | str | os.PathLike[str]

SYS_openat2 = 437  # same number on every architecture (added after the table unification)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

_MAXSYMLINKS = 40  # the kernel's limit, also used by the fallback walk
_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# None = not probed yet; tests force False to exercise the fallback walk.
_have_openat2: bool | None = None


def _openat2(dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    how = _OpenHow(flags, mode, resolve)
    raw = os.fsencode(path)
    while True:
        fd = _libc.syscall(
            ctypes.c_long(SYS_openat2),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(raw),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        # EAGAIN: a rename/mount raced the RESOLVE_IN_ROOT walk; the kernel asks us to retry.
        if err in (errno.EINTR, errno.EAGAIN):
            continue
        raise OSError(err, os.strerror(err), path)


def openat2_available() -> bool:
    """True when the kernel implements openat2(2) (Linux >= 5.6)."""
    global _have_openat2
    if _have_openat2 is None:
        try:
            os.close(_openat2(-100, "/", os.O_PATH | os.O_CLOEXEC, 0, 0))  # AT_FDCWD
            _have_openat2 = True
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EPERM):  # EPERM: seccomp filter
                raise
            _have_openat2 = False
    return _have_openat2


def _split(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def _walk_in_root(root_fd: int, path: str, flags: int, mode: int) -> int:
    """Userspace RESOLVE_IN_ROOT: one O_PATH|O_NOFOLLOW step per component.

    ``stack`` holds the fds of the directories walked so far, so ``..`` pops
    back to the previous fd (clamped at the root) instead of asking the host.
    """
    stack = [os.dup(root_fd)]
    todo = _split(path)
    todo.reverse()
    links = 0
    try:
        while todo:
            comp = todo.pop()
            last = not todo
            if comp == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            if last:
                fd = _open_last(stack[-1], comp, flags, mode)
                if fd is not None:
                    return fd
            else:
                try:
                    fd = os.open(comp, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
                except OSError as e:
                    raise OSError(e.errno, e.strerror, path) from None
                st = os.fstat(fd)
                if not stat.S_ISLNK(st.st_mode):
                    if not stat.S_ISDIR(st.st_mode):
                        os.close(fd)
                        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
                    stack.append(fd)
                    continue
                os.close(fd)
            # A symlink to follow: splice its target into the remaining components.
            links += 1
            if links > _MAXSYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(comp, dir_fd=stack[-1])
            if target.startswith("/"):
                while len(stack) > 1:
                    os.close(stack.pop())
            parts = _split(target)
            parts.reverse()
            todo.extend(parts)
            if not parts and last:  # link to "/" or "." as the final component
                todo.append(".")
        # Path was the root itself (or resolved to a directory on the stack).
        if flags & os.O_CREAT and not flags & os.O_DIRECTORY:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


def _open_last(dirfd: int, comp: str, flags: int, mode: int) -> int | None:
    """Open the final component, or return None when it is a symlink to follow."""
    if comp == ".":
        return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=dirfd)
    follow = not flags & os.O_NOFOLLOW and not (flags & os.O_CREAT and flags & os.O_EXCL)
    if follow:
        try:
            if stat.S_ISLNK(os.stat(comp, dir_fd=dirfd, follow_symlinks=False).st_mode):
                return None
        except FileNotFoundError:
            pass  # O_CREAT creates it below; otherwise open() reports ENOENT
    # O_NOFOLLOW always: if a link appeared since the lstat we fail (ELOOP)
    # or get the link itself (O_PATH, checked below) -- never follow it on the host.
    fd = os.open(comp, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dirfd)
    if follow and stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EAGAIN, "path changed during lookup", comp)
    return fd


@contextmanager
def root_fd(root: RootLike) -> Iterator[int]:
    """An fd for ``root``: the caller's fd as is, or a fresh O_PATH one closed on exit."""
    if isinstance(root, int):
        yield root
        return
    fd = open_root(root)
    try:
        yield fd
    finally:
        os.close(fd)


def open_root(root: str | os.PathLike[str]) -> int:
    """O_PATH|O_DIRECTORY fd of the root directory itself (the host path is trusted)."""
    try:
        return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise _wrap(e, os.fspath(root)) from None


def open_in_root(root: RootLike, path: str, flags: int, mode: int = 0o644) -> int:
    """Open ``path`` resolved inside ``root`` (absolute links and ``..`` stay in root).

    The final component is followed like open(2) does unless ``O_NOFOLLOW`` is
    in ``flags`` (with ``O_PATH|O_NOFOLLOW`` the fd refers to the symlink itself).
    Raises OSError as open(2) would; callers map it with :func:`wrap_oserror`.
    """
    flags |= os.O_CLOEXEC
    tmpfile = getattr(os, "O_TMPFILE", 0)  # includes the O_DIRECTORY bit: compare whole
    if not flags & os.O_CREAT and (flags & tmpfile) != tmpfile:
        mode = 0  # openat2 rejects a mode without O_CREAT/O_TMPFILE
    with root_fd(root) as fd:
        if openat2_available():
            # RESOLVE_NO_MAGICLINKS: /proc/self/root-style links inside a
            # container's /proc must not teleport us out.
            return _openat2(fd, path or ".", flags, mode, _RESOLVE)
        return _walk_in_root(fd, path, flags, mode)


def open_parent_in_root(root: RootLike, path: str, create: bool = True) -> tuple[int, str]:
    """(fd of the directory holding ``path``, final name), parents resolved in root.

    The final name is *not* resolved, so callers can create, replace or unlink
    it with the ``*at`` calls without following a link there. The name is ""
    when ``path`` is the root itself. Parents are created (0755) when ``create``.
    """
    clean = clean_path(path)
    parent, name = posixpath.split(clean)
    with root_fd(root) as fd:
        if create and parent:
            return _mkdirs_fd(fd, parent, 0o755), name
        return open_in_root(fd, parent, os.O_PATH | os.O_DIRECTORY), name


def clean_path(path: str) -> str:
    """Lexically normalise a path inside a root: ``/../../etc/x`` -> ``etc/x``, ``/`` -> ``""``.

    Like Docker, ``..`` cannot climb above the root. Symlinks are not looked at.
    """
    return posixpath.normpath("/" + path).lstrip("/")


def _mkdirs_fd(fd: int, path: str, mode: int) -> int:
    """mkdir -p inside the root; returns an O_PATH fd of the final directory.

    Prefixes are resolved in the root, so a component that is a symlink (even
    to an absolute path) is followed inside the root; a dangling one is an
    error. Directories are made with mkdirat() relative to their parent's fd,
    and below a directory we just made the rest is created directly
    (O_NOFOLLOW), which keeps deep paths linear rather than quadratic.
    """
    try:
        return open_in_root(fd, path, os.O_PATH | os.O_DIRECTORY)
    except FileNotFoundError:
        pass
    comps = _split(path)
    cur = os.dup(fd)
    fresh = False  # cur is a directory this call created
    try:
        for i, comp in enumerate(comps):
            nxt = -1
            if fresh and comp != "..":
                try:
                    nxt = _mkdir_at(cur, comp, mode)
                except FileExistsError:
                    pass  # someone raced us: resolve it the careful way below
            if nxt < 0:
                prefix = "/".join(comps[: i + 1])
                try:
                    nxt = open_in_root(fd, prefix, os.O_PATH | os.O_DIRECTORY)
                    fresh = False
                except FileNotFoundError:
                    try:
                        os.close(_mkdir_at(cur, comp, mode))
                        fresh = True
                    except FileExistsError:
                        fresh = False  # a dangling symlink or a racer: the reopen decides
                    nxt = open_in_root(fd, prefix, os.O_PATH | os.O_DIRECTORY)
            os.close(cur)
            cur = nxt
        return cur
    except BaseException:
        os.close(cur)
        raise


def _mkdir_at(dirfd: int, name: str, mode: int) -> int:
    """mkdirat + exact mode; returns an O_PATH fd of the new directory."""
    os.mkdir(name, mode, dir_fd=dirfd)
    # mkdir honours the umask; set the asked mode exactly, through an fd so a
    # link swapped in meanwhile is not followed.
    dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        os.fchmod(dfd, mode)
    finally:
        os.close(dfd)
    return os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)


def mkdirs_in_root(root: RootLike, path: str, mode: int = 0o755) -> None:
    """Create ``path`` and its parents inside ``root`` (existing links followed in root)."""
    with root_fd(root) as fd:
        try:
            os.close(_mkdirs_fd(fd, path, mode))
        except OSError as e:
            raise wrap_oserror(e, path) from None


def write_file_in_root(
    root: RootLike,
    path: str,
    data: bytes,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    follow: bool = True,
) -> None:
    """Write ``data`` to ``path`` inside ``root``, creating parents.

    An existing symlink at ``path`` is followed *inside* the root (a planted
    ``etc/resolv.conf -> /host/file`` writes ``<root>/host/file``), never on
    the host. When the link cannot be followed (its target's directory does
    not exist in the root) or ``follow`` is False, the link itself is
    replaced by the file, which is what an engine placing its own file wants.
    """
    with root_fd(root) as rfd:
        try:
            pfd, name = open_parent_in_root(rfd, path, create=True)
        except OSError as e:
            raise wrap_oserror(e, path) from None
        if not name:
            os.close(pfd)
            raise InvalidArgument(f"{path}: is the root directory", obj=path)
        try:
            fd = _create_at(rfd, pfd, path, name, mode, follow)
        except OSError as e:
            raise wrap_oserror(e, path) from None
        finally:
            os.close(pfd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidArgument(f"{path}: not a regular file", obj=path)
            os.ftruncate(fd, 0)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)  # after chown, which clears setuid bits
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def _create_at(rfd: int, pfd: int, path: str, name: str, mode: int, follow: bool) -> int:
    # O_NONBLOCK: opening a planted FIFO must not hang; it is refused by the caller.
    flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
    if follow:
        try:
            return open_in_root(rfd, path, flags, mode)
        except FileNotFoundError:
            pass  # dangling link into a missing directory: replace the link
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            os.unlink(name, dir_fd=pfd)
    except FileNotFoundError:
        pass
    # pfd is already resolved in root and O_NOFOLLOW guards the final name.
    return os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=pfd)


def read_file_in_root(root: RootLike, path: str) -> bytes:
    """Contents of the regular file ``path`` resolved inside ``root``."""
    try:
        # O_NONBLOCK: a planted FIFO must not hang us; non-regular files are refused below.
        fd = open_in_root(root, path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise wrap_oserror(e, path) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidArgument(f"{path}: not a regular file", obj=path)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def fd_path(fd: int) -> Path:
    """The host path the kernel records for an open fd."""
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


def resolve_in_root(root: RootLike, path: str, follow: bool = True) -> Path:
    """Host path of what ``path`` names inside ``root`` (must exist).

    For display and bind-mount sources; do not write through the returned
    path later (the container may have swapped a link since) -- use the fds.
    """
    flags = os.O_PATH | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = open_in_root(root, path, flags)
    except OSError as e:
        raise wrap_oserror(e, path) from None
    try:
        return fd_path(fd)
    finally:
        os.close(fd)


def lstat_in_root(root: RootLike, path: str) -> os.stat_result:
    """stat of ``path`` inside ``root`` without following its final component."""
    try:
        fd = open_in_root(root, path, os.O_PATH | os.O_NOFOLLOW)
    except OSError as e:
        raise wrap_oserror(e, path) from None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def stat_in_root(root: RootLike, path: str) -> os.stat_result:
    """stat of ``path`` inside ``root``, links followed inside the root."""
    try:
        fd = open_in_root(root, path, os.O_PATH)
    except OSError as e:
        raise wrap_oserror(e, path) from None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def exists_in_root(root: RootLike, path: str, follow: bool = True) -> bool:
    try:
        os.close(open_in_root(root, path, os.O_PATH | (0 if follow else os.O_NOFOLLOW)))
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        if e.errno == errno.ELOOP:
            return False
        raise wrap_oserror(e, path) from None


def wrap_oserror(e: OSError, path: str) -> EngineError:
    """Map an OSError about a path inside a root to the engine's error hierarchy."""
    return _wrap(e, path)


def _wrap(e: OSError, path: str) -> EngineError:
    msg = f"{path}: {e.strerror or e}"
    if e.errno == errno.ENOENT:
        return NotFound(msg, obj=path, errno=e.errno)
    # ENXIO: a FIFO without a reader opened for writing with O_NONBLOCK.
    if e.errno in (
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
        errno.EEXIST,
        errno.EXDEV,
        errno.ENXIO,
    ):
        return InvalidArgument(msg, obj=path, errno=e.errno)
    return EngineError(msg, obj=path, errno=e.errno)
