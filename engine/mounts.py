"""mount(2)/umount2(2) through libc, without spawning mount(8).

Overlay options: lower layers highest-first, as overlayfs wants. Long
lowerdir strings (many layers) would pass the one-page mount data limit, so
the mount is made from inside the layers directory with short relative names
when needed.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from engine.errors import EngineError

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MNT_DETACH = 2
MS_RDONLY = 1
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def make_private(target: str) -> None:
    """No propagation: the runtime's copy of this mount in the container's mount
    namespace then stays independent, and unmounting ours later does not wait
    on (or reach into) the container's namespace while the kernel tears it down."""
    rc = _libc.mount(b"none", target.encode(), None, MS_PRIVATE, None)
    if rc != 0:
        err = ctypes.get_errno()
        raise EngineError(f"make {target} private failed: {os.strerror(err)}", errno=err)


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    rc = _libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
        data.encode() if data else None,
    )  # fmt: skip
    if rc != 0:
        err = ctypes.get_errno()
        raise EngineError(
            f"mount {fstype or 'bind'} on {target} failed: {os.strerror(err)}", errno=err
        )


def umount(target: str, detach: bool = True) -> bool:
    """Unmount; False if it was not mounted (EINVAL) or is gone (ENOENT)."""
    rc = _libc.umount2(target.encode(), MNT_DETACH if detach else 0)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (22, 2):  # EINVAL: not a mount point; ENOENT
            return False
        raise EngineError(f"umount {target} failed: {os.strerror(err)}", errno=err)
    return True


def is_mountpoint(path: Path) -> bool:
    p = str(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4].replace("\\040", " ") == p:
                    return True
    except OSError:
        pass
    return False


def volatile_marker(work: Path) -> Path:
    """What a ``volatile`` overlay mount leaves in its work dir; while it exists the
    kernel refuses to mount that upper/work pair again (see
    containers.lifecycle.prepare_overlay)."""
    return work / "work" / "incompat" / "volatile"


def mount_overlay(
    lower: list[Path], upper: Path, work: Path, target: Path, volatile: bool = False
) -> None:
    """Mount an overlay; ``lower`` is lowest-first (image order).

    ``volatile``: the upper layer is never synced to disk, not even at unmount
    (which otherwise syncs the whole upper filesystem: 1-15 ms here, more when the
    disk is busy). Only for layers nobody keeps (``run --rm``), as Podman does;
    after a host crash such a layer may have lost writes.
    """
    # Options as Podman/containers-storage use them; "index=off" and no
    # redirect_dir/metacopy keep the upper dir a plain diff that commit can tar.
    extra = ",volatile" if volatile else ""
    lowers = ":".join(str(p) for p in reversed(lower))
    opts = f"lowerdir={lowers},upperdir={upper},workdir={work},index=off,redirect_dir=off,metacopy=off{extra}"
    if len(opts) < 4000:
        try:
            mount("overlay", str(target), "overlay", 0, opts)
        except EngineError as e:
            if not (volatile and e.errno == 22):
                raise
            # A kernel before 5.10 has no "volatile": mount as usual.
            mount("overlay", str(target), "overlay", 0, opts[: -len(extra)])
        make_private(str(target))
        return
    # Too long for one page: use paths relative to the common parent, mounting
    # from a child process that chdir()s there (chdir in our process would race threads).
    # (Never volatile: the option is only an optimisation, and this path is rare.)
    common = os.path.commonpath([str(p) for p in lower])
    rel = ":".join(os.path.relpath(p, common) for p in reversed(lower))
    opts = f"lowerdir={rel},upperdir={upper},workdir={work},index=off,redirect_dir=off,metacopy=off"
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(common)
            mount("overlay", str(target), "overlay", 0, opts)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise EngineError(f"mount overlay on {target} failed ({len(lower)} layers)")
    make_private(str(target))
