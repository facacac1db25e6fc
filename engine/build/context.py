"""The build context: a directory, or a tar (plain or compressed) read from a stream.

A directory is used in place, through an fd of its root: every path the
build reads is resolved inside it (:mod:`engine.safepath`), so neither
``../`` in an instruction nor a symlink in the context reaches a file outside.
A tar context is unpacked first into the build's scratch space by the layer
extractor (names cleaned, links never followed, no devices), then used the
same way. A stream that is not a tar is the Dockerfile itself, with an empty
context (``docker build - < Dockerfile``).

``.dockerignore`` (or ``<Dockerfile>.dockerignore`` beside the Dockerfile, as
BuildKit reads it) is applied when files are looked up; the Dockerfile and
``.dockerignore`` are read whether excluded or not, but COPY/ADD see them only
when they are not excluded (Docker).
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engine.build.dockerignore import Matcher
from engine.errors import InvalidArgument, NotFound
from engine.safepath import open_root, read_file_in_root

_MAX_DOCKERFILE = 16 << 20


@dataclass
class BuildContext:
    root: Path
    rfd: int  # O_PATH fd of the root: every lookup goes through it
    ignore: Matcher

    def excluded(self, rel: str) -> bool:
        return self.ignore.excluded(rel)

    def may_enter(self, rel: str) -> bool:
        return self.ignore.may_include_below(rel)

    def close(self) -> None:
        if self.rfd >= 0:
            os.close(self.rfd)
            self.rfd = -1


def dir_context(path: Path) -> BuildContext:
    """A directory as a context, nothing ignored yet (the caller sets ``ignore`` from
    its .dockerignore: the main context's once the Dockerfile is known)."""
    if not path.is_dir():
        raise NotFound(f"unable to prepare context: path {str(path)!r} not found", obj=str(path))
    return BuildContext(path, open_root(path), Matcher([]))


def _sniff(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return ""


def decompressing(stream: BinaryIO) -> tuple[str, BinaryIO]:
    """(kind, a stream of plain tar bytes for bzip2/xz, else the stream as is with
    its head put back): gzip, zstd and plain tar are handled by the layer extractor."""
    head = stream.read(512)
    kind = _sniff(head)
    from engine.images.layers import _Prefixed

    whole = io.BufferedReader(_Prefixed(head, stream), 1 << 20)  # type: ignore[arg-type]
    if kind == "bzip2":
        import bz2

        return kind, bz2.BZ2File(whole)  # type: ignore[return-value]
    if kind == "xz":
        import lzma

        return kind, lzma.LZMAFile(whole)  # type: ignore[return-value]
    return kind, whole  # type: ignore[return-value]


def tar_context(stream: BinaryIO, dest: Path) -> tuple[Path, str | None]:
    """Unpack a context tar into ``dest``; returns (dest, None), or (dest, the
    Dockerfile text) when the stream was a plain Dockerfile, not a tar."""
    from engine.images import layers

    kind, plain = decompressing(stream)
    if not kind:
        data = plain.read(_MAX_DOCKERFILE + 1)
        if len(data) > _MAX_DOCKERFILE:
            raise InvalidArgument("the Dockerfile read from stdin is larger than 16 MiB")
        return dest, data.decode("utf-8", "replace")
    layers.copy_in(str(dest), "/", plain, preserve_owner=True)
    return dest, None


def read_dockerfile(ctx: BuildContext, rel: str) -> str:
    """The Dockerfile at ``rel`` inside the context (resolved inside it)."""
    try:
        data = read_file_in_root(ctx.rfd, rel)
    except NotFound:
        raise NotFound(
            f"unable to prepare context: the Dockerfile ({rel}) was not found in the build context",
            obj=rel,
        ) from None
    if len(data) > _MAX_DOCKERFILE:
        raise InvalidArgument(f"the Dockerfile {rel} is larger than 16 MiB", obj=rel)
    return data.decode("utf-8", "replace")


def ignore_file(
    ctx_rfd: int, dockerfile_rel: str | None, dockerfile_host: Path | None
) -> tuple[str, str] | None:
    """(where, text) of the ``.dockerignore`` in effect, or None: ``<Dockerfile>.dockerignore``
    beside the Dockerfile wins over ``.dockerignore``. ``where`` is a path in the
    context, or the host path beside a Dockerfile the user named outside the context.

    Inside the context it is read like every context file (resolved in the
    context, regular files only); only for a Dockerfile outside the context is
    the file beside it read from the host."""
    if dockerfile_rel:
        rel = dockerfile_rel + ".dockerignore"
        data = _read_in_context(ctx_rfd, rel)
        if data is not None:
            return rel, _read_ignore(data)
    elif dockerfile_host is not None:
        beside = Path(str(dockerfile_host) + ".dockerignore")
        try:
            fd = os.open(beside, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            with os.fdopen(fd, "rb") as f:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    return str(beside), _read_ignore(f.read(_MAX_DOCKERFILE + 1))
    data = _read_in_context(ctx_rfd, ".dockerignore")
    return (".dockerignore", _read_ignore(data)) if data is not None else None


def ignore_text(ctx_rfd: int, dockerfile_rel: str | None, dockerfile_host: Path | None) -> str:
    """The text of the ``.dockerignore`` in effect (see :func:`ignore_file`), or ""."""
    found = ignore_file(ctx_rfd, dockerfile_rel, dockerfile_host)
    return found[1] if found else ""


def _read_in_context(ctx_rfd: int, rel: str) -> bytes | None:
    """A regular file of the context, or None (absent, or not a regular file)."""
    try:
        return read_file_in_root(ctx_rfd, rel)
    except (NotFound, InvalidArgument):
        return None


def _read_ignore(data: bytes) -> str:
    if len(data) > _MAX_DOCKERFILE:
        raise InvalidArgument("the .dockerignore file is larger than 16 MiB")
    return data.decode("utf-8", "replace")


def rel_in_context(root: Path, path: Path) -> str | None:
    """``path`` relative to the context root when it lies inside it (lexically)."""
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    except ValueError:
        return None
    if rel == ".." or rel.startswith("../"):
        return None
    return posixpath.normpath(rel)
