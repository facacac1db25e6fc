"""Where a pulled blob is written while it is verified.

An unnamed file (``O_TMPFILE``) in the store's staging directory: a pull
killed in the middle of a layer leaves no file behind (the kernel frees it
with the process), so nothing needs cleaning up before a retry, and nothing
can be mistaken for another pull's work in progress. The blob gets its name
only once verified, by ``link`` of the open file: whole or not at all.
Where the filesystem has no ``O_TMPFILE``, a named ``pull-<random>`` file
renamed into place (the store's garbage collection removes leftovers).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import BinaryIO

from engine.images.content import BlobStore

WRITEBACK_STEP = 4 << 20
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = None


def start_writeback(fd: int, offset: int) -> None:
    """Ask the kernel to start writing the file from ``offset`` on to disk now
    (sync_file_range(SYNC_FILE_RANGE_WRITE), which does not wait), so that the
    ``fsync`` installing a blob of tens of MB finds little left to do: it is the
    last step of a layer, on the pull's critical path. Best effort."""
    global _sync_file_range
    if _sync_file_range is None:
        import ctypes

        try:
            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):
            fn = False
        _sync_file_range = fn
    if _sync_file_range:
        _sync_file_range(fd, offset, 0, _SYNC_FILE_RANGE_WRITE)  # 0: to the end


class StagedBlob:
    def __init__(self, blobs: BlobStore):
        blobs.ensure_dirs()
        self.blobs = blobs
        self.path: Path | None = None  # only for the named fallback
        try:
            fd = os.open(blobs.tmp, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            self.path = blobs.tmp / f"pull-{os.urandom(16).hex()}"
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o644)
        self.file: BinaryIO = os.fdopen(fd, "w+b")

    def install(self, digest: str) -> None:
        """The verified content becomes blob ``digest`` (kept if already there)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        os.fchmod(self.file.fileno(), 0o644)
        final = self.blobs.path(digest)
        if self.path is not None:
            if final.exists():
                self.path.unlink()
            else:
                os.replace(self.path, final)
            self.path = None
            return
        # A dir fd makes os.link use linkat(AT_SYMLINK_FOLLOW): plain link(2)
        # would link the /proc symlink itself (EXDEV), not the file it names.
        dfd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with contextlib.suppress(FileExistsError):  # another pull's, verified too
                os.link(f"/proc/self/fd/{self.file.fileno()}", final.name, dst_dir_fd=dfd)
        finally:
            os.close(dfd)

    def close(self) -> None:
        self.file.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.path = None

    def __enter__(self) -> StagedBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
