"""Layer tars <-> directories, without ever touching the host outside the root.

A layer tar is hostile input: names may be absolute or climb with ``..``, a
symlink entry may point anywhere and later entries may try to write through
it, a hardlink may name a host file, and device nodes could expose the host's
disks. So every entry is created with the ``*at`` calls relative to a parent
directory fd that :mod:`engine.safepath` resolved *inside* the destination
(links followed as if the destination were ``/``), and the final name is
never followed. Names are cleaned like Docker does (``/../../etc/x`` ->
``etc/x``). Symlink targets are stored verbatim (they are data, resolved
later inside the container). Device nodes and FIFOs from a tar are skipped:
the only device we create is the overlayfs whiteout (char 0:0).

Tars are read by a loop of our own around tarfile's header parser (the
``TarInfo.fromtarfile`` that ``TarFile`` uses, extended headers bounded): file
content goes from the stream to its file as it comes, without tarfile's copies
(``TarSource``), and a directory's entries share one lookup of it.

The writers walk with ``O_PATH|O_NOFOLLOW`` fds too, because the tree being
archived (a running container's rootfs for ``cp``/``export``) can change
under us. Upper dirs must come from overlay mounts without ``redirect_dir``
or ``metacopy`` (their xattrs would make a naive diff wrong); ``trusted.overlay.*``
xattrs are never copied into or out of a tar except as whiteout markers.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from engine.errors import Conflict, EngineError, InvalidArgument, Unsupported
from engine.safepath import (
    clean_path,
    mkdirs_in_root,
    open_in_root,
    open_parent_in_root,
    root_fd,
    wrap_oserror,
)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
_BUF = 1 << 20

__all__ = [
    "TarSource",
    "chunks_of",
    "copy_in",
    "copy_out",
    "diff_to_tar",
    "extract_layer",
    "extract_layer_from",
    "open_decompressed",
    "tar_dir",
]


# -- decompression -----------------------------------------------------------------------


class _Prefixed(io.RawIOBase):
    """A stream with bytes we already read (the magic sniff) put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)


def open_decompressed(stream: BinaryIO) -> BinaryIO:
    """The plain tar bytes of a layer stream: plain, gzip or zstd (sniffed by magic).

    Closing the result never closes ``stream`` (the caller owns it).
    """
    head = stream.read(4)
    src: BinaryIO = io.BufferedReader(_Prefixed(head, stream), _BUF)  # type: ignore[arg-type]
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=src, mode="rb")  # type: ignore[return-value]
    if head == b"\x28\xb5\x2f\xfd":
        return io.BufferedReader(_ZstdReader(src), _BUF)  # type: ignore[return-value]
    return src


class _ZstdReader(io.RawIOBase):
    """Decodes zstd through Debian's zstd binary (no zstd module in the venv)."""

    def __init__(self, src: BinaryIO) -> None:
        if not shutil.which("zstd"):
            raise Unsupported(
                "zstd-compressed layer and no zstd binary on this host (apt install zstd)"
            )
        self._proc = subprocess.Popen(
            ["zstd", "-dcq"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        # A feeder thread, so the two pipes cannot deadlock each other.
        self._feeder = threading.Thread(target=self._feed, args=(src,), daemon=True)
        self._feeder.start()

    def _feed(self, src: BinaryIO) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while chunk := src.read(_BUF):
                stdin.write(chunk)
        except (BrokenPipeError, ValueError, OSError):
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        assert self._proc.stdout is not None
        data = self._proc.stdout.read1(len(b))
        if not data:
            rc = self._proc.wait()
            if rc != 0:
                raise InvalidArgument(f"corrupt zstd layer (zstd exited {rc})")
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            assert self._proc.stdout is not None
            self._proc.stdout.close()
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._feeder.join()
        super().close()


# -- extraction ----------------------------------------------------------------------------


class _Extractor:
    """Creates tar entries under ``base`` (a cleaned path) inside the root ``rfd``."""

    def __init__(self, rfd: int, base: str, *, layer: bool, owner: tuple[int, int] | None) -> None:
        self.rfd = rfd
        self.base = base
        self.layer = layer  # whiteouts become overlay whiteouts; replacing a dir is fine
        self.owner = owner
        self.total = 0
        self.dir_times: list[tuple[str, float]] = []
        self._pfd: int | None = None
        self._pdir: str | None = None

    def run(self, src: TarSource) -> int:
        try:
            for member in _members(src):
                try:
                    self._entry(src, member)
                except OSError as e:
                    raise wrap_oserror(e, member.name) from None
        finally:
            self._forget_parent()
        # Directory mtimes last: creating their children changed them.
        for path, mtime in reversed(self.dir_times):
            try:
                fd = open_in_root(self.rfd, path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError:
                continue  # replaced by a later entry
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
        return self.total

    # The parent directory of the previous entry is kept open for the next one when that
    # is in the same directory (tars list a directory's files together), saving a lookup
    # in the root per file. It is only ever the previous entry's parent (any entry
    # elsewhere, and every whiteout, drops it), and it is dropped too when that entry
    # removed a directory or a symlink (``_clear``): then the one entry that ran since
    # the lookup only added children or replaced a regular file, which no lookup walks
    # through, so a fresh lookup of the same path would find this same directory.
    def _parent(self, full: str) -> tuple[int, str]:
        parent, name = posixpath.split(full)
        if self._pfd is not None and parent == self._pdir:
            return self._pfd, name
        self._forget_parent()
        pfd, name = open_parent_in_root(self.rfd, full, create=True)
        self._pfd, self._pdir = pfd, parent
        return pfd, name

    def _forget_parent(self) -> None:
        if self._pfd is not None:
            os.close(self._pfd)
        self._pfd = self._pdir = None

    def _entry(self, src: TarSource, m: tarfile.TarInfo) -> None:
        rel = clean_path(m.name)
        full = posixpath.join(self.base, rel) if self.base else rel
        name = posixpath.basename(rel)
        if self.layer and name.startswith(WHITEOUT_PREFIX):
            self._forget_parent()
            self._whiteout(full, name, m.mtime)
            return
        if not rel:  # the archive's "./": only a layer may set its root's metadata
            if m.isdir() and self.layer:
                self._attrs_dir(full, m)
            return
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            return  # devices, FIFOs: never from a tar (only whiteouts are devices)
        pfd, name = self._parent(full)
        if m.islnk():
            self._hardlink(pfd, name, m)
            return
        kept_dir = self._clear(pfd, name, m.isdir())
        if m.isdir():
            if not kept_dir:
                os.mkdir(name, 0o700, dir_fd=pfd)  # real mode set below, after chown
            self._attrs_dir(full, m, pfd, name)
        elif m.issym():
            os.symlink(m.linkname, name, dir_fd=pfd)
            uid, gid = self.owner or (m.uid, m.gid)
            os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(name, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        else:
            # O_EXCL|O_NOFOLLOW: we just cleared the name; never write through a link.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, 0o600, dir_fd=pfd)
            try:
                src.copy_member(m, fd)
                self.total += m.size
                self._attrs(fd, m)
            finally:
                os.close(fd)

    def _clear(self, pfd: int, name: str, want_dir: bool) -> bool:
        """Make room for a new entry; True when an existing directory is kept."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and want_dir:
            return True
        if not self.layer and is_dir != want_dir:
            what = "directory" if is_dir else "non-directory"
            raise Conflict(
                f"{name}: cannot overwrite {what} with {'directory' if want_dir else 'non-directory'}"
            )
        if is_dir or stat.S_ISLNK(st.st_mode):
            self._pdir = None  # a lookup may have walked through it: no reuse of the parent
        if is_dir:
            shutil.rmtree(name, dir_fd=pfd)  # fd-based: never follows links inside
        else:
            os.unlink(name, dir_fd=pfd)
        return False

    def _hardlink(self, pfd: int, name: str, m: tarfile.TarInfo) -> None:
        # The target is resolved inside the root like any other name, and its
        # final component is not followed, so it can only be a file in the root.
        lrel = clean_path(m.linkname)
        lfull = posixpath.join(self.base, lrel) if self.base else lrel
        try:
            sfd, sname = open_parent_in_root(self.rfd, lfull, create=False)
        except FileNotFoundError:
            raise InvalidArgument(
                f"{m.name}: hardlink target {m.linkname!r} not found in the archive", obj=m.name
            ) from None
        try:
            try:
                sst = os.stat(sname, dir_fd=sfd, follow_symlinks=False) if sname else None
            except FileNotFoundError:
                sst = None
            if sst is None or stat.S_ISDIR(sst.st_mode):
                raise InvalidArgument(
                    f"{m.name}: hardlink target {m.linkname!r} is not a file in the archive",
                    obj=m.name,
                )
            try:
                dst = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if (dst.st_dev, dst.st_ino) == (sst.st_dev, sst.st_ino):
                    return
            except FileNotFoundError:
                pass
            self._clear(pfd, name, False)
            os.link(sname, name, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(sfd)

    def _whiteout(self, full: str, name: str, mtime: float) -> None:
        parent = posixpath.dirname(full)
        if name == OPAQUE_MARKER:
            mkdirs_in_root(self.rfd, parent)
            fd = open_in_root(self.rfd, parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        target = name[len(WHITEOUT_PREFIX) :]
        # ".wh..wh.*" is AUFS metadata; ".wh.." would whiteout the parent's parent.
        if target.startswith(WHITEOUT_PREFIX) or target in ("", ".", ".."):
            return
        pfd, _ = open_parent_in_root(self.rfd, posixpath.join(parent, target), create=True)
        try:
            self._clear(pfd, target, False)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            # The marker's mtime, so extract -> diff_to_tar round-trips exactly.
            os.utime(target, (mtime, mtime), dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)

    def _attrs_dir(
        self, full: str, m: tarfile.TarInfo, pfd: int | None = None, name: str = ""
    ) -> None:
        if pfd is None:
            fd = open_in_root(self.rfd, full, os.O_RDONLY | os.O_DIRECTORY)
        else:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
        try:
            self._attrs(fd, m, times=False)
        finally:
            os.close(fd)
        self.dir_times.append((full, m.mtime))

    def _attrs(self, fd: int, m: tarfile.TarInfo, times: bool = True) -> None:
        uid, gid = self.owner or (m.uid, m.gid)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears setuid/setgid
        for key, value in sorted(m.pax_headers.items()):
            if not key.startswith(_XATTR_PAX):
                continue
            xname = key[len(_XATTR_PAX) :]
            if xname.startswith("trusted.overlay."):
                continue  # overlay metadata (redirect, opaque...) is ours to set, not a tar's
            try:
                # tarfile decoded the raw bytes with surrogateescape; undo that.
                os.setxattr(fd, xname, value.encode("utf-8", "surrogateescape"))
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                    raise
        if times:
            os.utime(fd, (m.mtime, m.mtime))


# tarfile reads GNU long-name/long-link and pax headers whole into memory: a layer of a
# few MB (gigabytes of zeros, gzipped) could make one of gigabytes. Real ones are small.
_META_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
META_HEADER_MAX = 1 << 20


class _BoundedTarInfo(tarfile.TarInfo):
    # Where the member's data ends in the archive. tarfile replaces ``size`` of a
    # sparse member by the file's real size (a pax map, GNU's old format), so the
    # amount actually stored is kept here, from the header, for copy_member.
    data_end = -1

    def _proc_member(self, tarfile_):  # type: ignore[override]
        if self.type in _META_TYPES and self.size > META_HEADER_MAX:
            raise tarfile.HeaderError(
                f"extended header of {self.size} bytes (more than {META_HEADER_MAX})"
            )
        stored = self.size  # the header's size field: what the archive holds
        obj = super()._proc_member(tarfile_)
        if obj is self:  # not a pax/long-name wrapper (its member sets its own)
            self.data_end = self.offset_data + stored
        return obj


class TarSource:
    """The plain bytes of a tar as the extractor reads them, from ``next_chunk()``:
    a bytes-like object per call, ``b""`` at the end, valid until the next call (it
    may be a view of a buffer the producer reuses).

    Headers (512 bytes, bounded extended headers) are copied out for tarfile's
    parser; file content goes from the chunks straight to the file, in as many
    writes as there are chunks, with no copy in between.
    """

    def __init__(self, next_chunk: Callable[[], bytes | bytearray | memoryview]) -> None:
        self._next = next_chunk
        self._view = memoryview(b"")
        self._pos = 0
        self._ended = False
        self.offset = 0  # bytes consumed: tell()

    def _fill(self) -> bool:
        while not self._ended:
            chunk = self._next()
            if not len(chunk):
                self._ended = True
                break
            self._view = memoryview(chunk)
            self._pos = 0
            return True
        return False

    def tell(self) -> int:
        return self.offset

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end), a copy."""
        out = bytearray()
        while n > 0:
            left = len(self._view) - self._pos
            if left == 0:
                if not self._fill():
                    break
                continue
            k = min(left, n)
            out += self._view[self._pos : self._pos + k]
            self._pos += k
            self.offset += k
            n -= k
        return bytes(out)

    def _take(self, n: int) -> memoryview:
        """A view of the next 1..n bytes, consumed."""
        if self._pos == len(self._view) and not self._fill():
            raise tarfile.ReadError("unexpected end of data")
        k = min(n, len(self._view) - self._pos)
        view = self._view[self._pos : self._pos + k]
        self._pos += k
        self.offset += k
        return view

    def skip(self, n: int) -> None:
        while n > 0:
            n -= len(self._take(n))

    def write_to(self, fd: int, n: int) -> None:
        """The next ``n`` bytes to ``fd`` (at its current offset)."""
        while n > 0:
            view = self._take(n)
            n -= len(view)
            while view:
                view = view[os.write(fd, view) :]

    def copy_member(self, m: tarfile.TarInfo, fd: int) -> None:
        """Member ``m``'s content (positioned at its data) into the new file ``fd``."""
        if self.offset != m.offset_data:
            raise tarfile.ReadError(f"{m.name}: misplaced data")  # cannot happen; never seek back
        if not m.sparse:
            self.write_to(fd, m.size)
            return
        # A sparse member stores only its data runs, one after the other; the rest is holes.
        # The runs must fit in what is stored (a pax 1.0 map sits before the runs,
        # so offset_data is already past it): a longer map would read the headers
        # that follow as file content, and the members after it from the wrong place.
        end = getattr(m, "data_end", -1)
        stored = end - m.offset_data if end >= 0 else m.size
        mapped = 0
        for offset, size in m.sparse:
            if offset < 0 or size < 0 or offset + size > m.size:
                raise tarfile.ReadError(f"{m.name}: sparse map beyond the file's size")
            mapped += size
        if mapped > stored:
            raise InvalidArgument(
                f"malformed tar stream: sparse map of {m.name} covers {mapped} bytes,"
                f" {stored} stored",
                obj=m.name,
            )
        for offset, size in m.sparse:
            os.lseek(fd, offset, os.SEEK_SET)
            self.write_to(fd, size)
        os.ftruncate(fd, m.size)

    def drain(self) -> None:
        """Read to the end (what is left is only counted)."""
        while True:
            self.offset += len(self._view) - self._pos
            self._pos = len(self._view)
            if not self._fill():
                return


def chunks_of(stream: BinaryIO, size: int = _BUF) -> Callable[[], memoryview]:
    """``next_chunk`` for a :class:`TarSource` over a file-like object (one reused buffer)."""
    buf = bytearray(size)
    view = memoryview(buf)
    readinto = getattr(stream, "readinto", None)
    if readinto is None:
        return lambda: memoryview(stream.read(size))
    return lambda: view[: readinto(buf) or 0]


class _Parser:
    """What ``TarInfo.fromtarfile`` reads a member's headers with (the parts of a
    ``TarFile`` it uses): names decoded as tarfile does by default."""

    def __init__(self, src: TarSource) -> None:
        self.fileobj = src
        self.offset = 0  # where the next header starts (set by the parser)
        self.encoding = tarfile.ENCODING
        self.errors = "surrogateescape"
        self.pax_headers: dict[str, str] = {}


def _members(src: TarSource) -> Iterator[tarfile.TarInfo]:
    """The members of the tar in ``src``, as ``TarFile.next()`` reads them in a stream
    (the same header parser, the same end-of-archive rules); the caller reads each
    member's data or not: what it leaves is skipped."""
    parser = _Parser(src)
    while True:
        if parser.offset > src.offset:
            src.skip(parser.offset - src.offset)
        first = parser.offset == 0
        try:
            member = _BoundedTarInfo.fromtarfile(parser)
        except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError) as e:
            if first and isinstance(e, tarfile.EmptyHeaderError):
                raise tarfile.ReadError("empty file") from None
            return  # end-of-archive blocks (or, as tarfile, a stream that just stops)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as e:
            if first:
                raise tarfile.ReadError(str(e)) from None
            return
        except tarfile.SubsequentHeaderError as e:
            raise tarfile.ReadError(str(e)) from None
        yield member


def _extract_from(
    rfd: int, base: str, src: TarSource, layer: bool, owner: tuple[int, int] | None
) -> int:
    try:
        total = _Extractor(rfd, base, layer=layer, owner=owner).run(src)
        # Read past the end-of-archive blocks: a caller hashing the stream (diff_id)
        # must see every byte, and gzip/zstd check their trailers only at the end.
        src.drain()
        return total
    except tarfile.TarError as e:
        raise InvalidArgument(f"malformed tar stream: {e}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InvalidArgument(f"truncated or corrupt layer: {e}") from None


def _extract(
    rfd: int, base: str, stream: BinaryIO, layer: bool, owner: tuple[int, int] | None
) -> int:
    try:
        plain = open_decompressed(stream)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InvalidArgument(f"truncated or corrupt layer: {e}") from None
    try:
        return _extract_from(rfd, base, TarSource(chunks_of(plain)), layer, owner)
    finally:
        plain.close()


def extract_layer(stream: BinaryIO, dest: os.PathLike[str] | str) -> int:
    """Unpack an OCI/Docker layer (plain, gzip or zstd tar) into the directory ``dest``.

    ``dir/.wh.name`` becomes an overlay whiteout (char 0:0) at ``dir/name`` and
    ``dir/.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr on ``dir``.
    Mode (with setuid bits), owner, mtime and xattrs are kept. Returns the
    total size of the regular files written.
    """
    with root_fd(dest) as rfd:
        return _extract(rfd, "", stream, layer=True, owner=None)


def extract_layer_from(src: TarSource, dest: os.PathLike[str] | str) -> int:
    """:func:`extract_layer` of an uncompressed layer given as a :class:`TarSource`
    (the registry's pull streams it from the network, inflating as it goes)."""
    with root_fd(dest) as rfd:
        return _extract_from(rfd, "", src, layer=True, owner=None)


def copy_in(
    root: os.PathLike[str] | str,
    dest_in_root: str,
    stream: BinaryIO,
    *,
    preserve_owner: bool = False,
) -> None:
    """Extract a tar (``docker cp - CTR:dest``) into the directory ``dest_in_root``.

    ``dest_in_root`` is resolved inside ``root`` and must be a directory.
    Entry names cannot climb above it; links in the root are followed inside
    the root. Like ``docker cp``, files belong to root:root unless
    ``preserve_owner`` (``--archive``).
    """
    with root_fd(root) as rfd:
        try:
            os.close(open_in_root(rfd, dest_in_root, os.O_PATH | os.O_DIRECTORY))
        except OSError as e:
            raise wrap_oserror(e, dest_in_root) from None
        owner = None if preserve_owner else (0, 0)
        _extract(rfd, clean_path(dest_in_root), stream, layer=False, owner=owner)


# -- archiving -----------------------------------------------------------------------------


class _Padded(io.RawIOBase):
    """Exactly ``size`` bytes of a file that may shrink or grow while we read it."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self._left)
        if n == 0:
            return 0
        data = os.read(self._fd, n) or b"\0" * n
        b[: len(data)] = data
        self._left -= len(data)
        return len(data)


class _Writer:
    def __init__(self, out: BinaryIO, *, whiteouts: bool, mtime: int | None) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
        self.whiteouts = whiteouts  # overlay upper dir: char 0:0 and opaque xattr -> .wh.
        self.mtime = mtime
        self.links: dict[tuple[int, int], str] = {}

    def _info(self, arc: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(arc)
        ti.type = kind
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""  # numeric ids only: deterministic and host-independent
        mtime = int(st.st_mtime)
        ti.mtime = min(mtime, self.mtime) if self.mtime is not None else mtime
        return ti

    def _marker(self, arc: str, st: os.stat_result) -> None:
        ti = self._info(arc, st, tarfile.REGTYPE)
        ti.mode = 0
        self.tar.addfile(ti)

    def emit(self, fd: int, arc: str) -> int | None:
        """Archive the O_PATH fd ``fd`` as ``arc``; returns a readable fd if it is a dir."""
        st = os.fstat(fd)
        mode = st.st_mode
        if stat.S_ISCHR(mode) and st.st_rdev == 0 and self.whiteouts:
            parent, name = posixpath.split(arc)
            self._marker(posixpath.join(parent, WHITEOUT_PREFIX + name), st)
            return None
        if stat.S_ISDIR(mode):
            dfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            ti = self._info(arc, st, tarfile.DIRTYPE)
            xattrs = self._xattrs(fd)
            ti.pax_headers = xattrs
            if arc != ".":
                self.tar.addfile(ti)
            if self.whiteouts and _getxattr(fd, OPAQUE_XATTR) == b"y":
                self._marker(posixpath.join(arc, OPAQUE_MARKER), st)
            return dfd
        if stat.S_ISLNK(mode):
            ti = self._info(arc, st, tarfile.SYMTYPE)
            ti.linkname = os.readlink("", dir_fd=fd)  # readlinkat(fd, "") on the O_PATH fd
            self.tar.addfile(ti)
            return None
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                ti = self._info(arc, st, tarfile.LNKTYPE)
                ti.linkname = self.links[key]
                self.tar.addfile(ti)
                return None
            if st.st_nlink > 1:
                self.links[key] = arc
            ti = self._info(arc, st, tarfile.REGTYPE)
            ti.pax_headers = self._xattrs(fd)
            rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                ti.size = os.fstat(rfd).st_size
                self.tar.addfile(ti, io.BufferedReader(_Padded(rfd, ti.size), _BUF))
            finally:
                os.close(rfd)
            return None
        kind = {stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE}.get(
            stat.S_IFMT(mode), tarfile.FIFOTYPE
        )
        if stat.S_ISSOCK(mode):
            return None  # sockets cannot be archived
        ti = self._info(arc, st, kind)
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        self.tar.addfile(ti)
        return None

    def _xattrs(self, fd: int) -> dict[str, str]:
        path = f"/proc/self/fd/{fd}"  # f*xattr() refuse O_PATH fds; the magic link does not
        try:
            names = os.listxattr(path)
        except OSError:
            return {}
        out: dict[str, str] = {}
        for xname in sorted(names):
            if xname.startswith("trusted.overlay."):
                continue
            try:
                value = os.getxattr(path, xname)
            except OSError:
                continue
            out[_XATTR_PAX + xname] = value.decode("utf-8", "surrogateescape")
        return out

    def walk(self, fd: int, arc: str, children_only: bool = False) -> None:
        """Archive ``fd`` (O_PATH) as ``arc`` and everything below it, in sorted order.

        Iterative (a hostile tree may be deeper than Python's recursion limit);
        each level keeps one directory fd open, and children are opened
        relative to it with O_NOFOLLOW, so nothing is ever resolved on the host.
        """
        first = self.emit(fd, "." if children_only else arc)
        if first is None:
            return
        frames = [(first, "" if children_only else arc, iter(_sorted_names(first)))]
        try:
            while frames:
                dfd, prefix, names = frames[-1]
                name = next(names, None)
                if name is None:
                    os.close(dfd)
                    frames.pop()
                    continue
                try:
                    cfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                except FileNotFoundError:
                    continue  # removed while we walk a live rootfs
                try:
                    child = self.emit(cfd, posixpath.join(prefix, name) if prefix else name)
                finally:
                    os.close(cfd)
                if child is not None:
                    child_arc = posixpath.join(prefix, name) if prefix else name
                    frames.append((child, child_arc, iter(_sorted_names(child))))
        finally:
            for dfd, _, _ in frames:
                os.close(dfd)

    def close(self) -> None:
        self.tar.close()


def _sorted_names(dfd: int) -> list[str]:
    return sorted(os.listdir(dfd), key=os.fsencode)


def _getxattr(fd: int, name: str) -> bytes | None:
    try:
        return os.getxattr(f"/proc/self/fd/{fd}", name)
    except OSError:
        return None


def _archive(
    src: os.PathLike[str] | str, out: BinaryIO, whiteouts: bool, mtime: int | None
) -> None:
    try:
        fd = os.open(src, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise wrap_oserror(e, os.fspath(src)) from None
    writer = _Writer(out, whiteouts=whiteouts, mtime=mtime)
    try:
        writer.walk(fd, "", children_only=True)
    except OSError as e:
        raise EngineError(
            f"archiving {os.fspath(src)}: {e}", obj=os.fspath(src), errno=e.errno
        ) from None
    finally:
        os.close(fd)
    writer.close()


def diff_to_tar(upper: os.PathLike[str] | str, out: BinaryIO, *, mtime: int | None = None) -> None:
    """Write an overlayfs upper dir as an OCI layer tar.

    Whiteouts (char 0:0) become ``.wh.name`` entries and opaque directories
    get a ``.wh..wh..opq`` entry; files hardlinked within ``upper`` become tar
    hardlinks. Entries are sorted, owners numeric, mtimes whole seconds
    (clamped to ``mtime`` when given, for reproducible layers).
    """
    _archive(upper, out, whiteouts=True, mtime=mtime)


def tar_dir(src: os.PathLike[str] | str, out: BinaryIO, *, mtime: int | None = None) -> None:
    """Deterministic tar of everything under ``src`` (no root entry, no whiteout conversion)."""
    _archive(src, out, whiteouts=False, mtime=mtime)


def copy_out(
    root: os.PathLike[str] | str, path_in_root: str, out: BinaryIO, *, follow_link: bool = False
) -> None:
    """Tar of ``path_in_root`` as ``docker cp CTR:path -`` writes it.

    The path is resolved inside ``root``: a link among its parents that points
    out of the root lands inside it. The final component is archived as is
    (a symlink stays a symlink) unless ``follow_link`` (``docker cp -L``), in
    which case it too is followed inside the root. The entry is named after
    the last path component; ``dir/.`` archives the directory's contents.
    """
    contents_only = path_in_root.endswith("/.") or path_in_root in (".", "/")
    follow = follow_link or path_in_root.endswith("/") or contents_only
    clean = clean_path(path_in_root)
    with root_fd(root) as rfd:
        try:
            fd = open_in_root(rfd, clean, os.O_PATH | (0 if follow else os.O_NOFOLLOW))
        except OSError as e:
            raise wrap_oserror(e, path_in_root) from None
        try:
            if contents_only and not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise InvalidArgument(f"{path_in_root}: not a directory", obj=path_in_root)
            writer = _Writer(out, whiteouts=False, mtime=None)
            writer.walk(fd, posixpath.basename(clean) or ".", children_only=contents_only)
            writer.close()
        except OSError as e:
            raise wrap_oserror(e, path_in_root) from None
        finally:
            os.close(fd)
