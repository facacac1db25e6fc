"""Content-addressed blob storage: ``blobs/sha256/<hex>``.

A blob is written to a temporary file in the same filesystem, its digest is
checked, and only then is it renamed into place: a reader never sees a partial
blob, and a crash leaves at most a temporary file that garbage collection
removes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engine.errors import InvalidArgument, NotFound, Unsupported

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (the parts we use)."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def check_digest(digest: str) -> str:
    """Validate a digest string before it is ever used to build a path."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid or unsupported digest {digest!r}", obj=str(digest))
    return digest


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256_bytes(f"{out[-1]} {diff_id}".encode()))
    return out


class HashingReader(io.RawIOBase):
    """Wraps a stream, hashing and counting every byte pulled through it."""

    def __init__(self, raw: BinaryIO):
        super().__init__()
        self._raw = raw
        self._hash = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        self._hash.update(data)
        self.count += n
        return n

    def drain(self) -> None:
        """Read to EOF: a tar reader may stop before trailing padding, but the
        digest covers the whole stream. Reads the wrapped stream directly, so
        it works even if a consumer's buffered wrapper closed this reader."""
        while data := self._raw.read(CHUNK):
            self._hash.update(data)
            self.count += len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


@contextlib.contextmanager
def decompressed(stream: BinaryIO) -> Iterator[BinaryIO]:
    """The uncompressed bytes of a layer or archive stream (gzip sniffed by magic).

    Our own, not the layer extractor's: digests must be computed over exactly
    the bytes we hand on, and zstd (which needs an external program) is refused
    here rather than half-supported.
    """
    src = io.BufferedReader(_Raw(stream), CHUNK)
    head = src.peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=src, mode="rb") as gz:
                yield gz  # type: ignore[misc]
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise InvalidArgument(f"corrupt gzip stream: {e}") from None
    elif head == b"\x28\xb5\x2f\xfd":
        raise Unsupported("zstd-compressed layers and archives are not supported yet")
    else:
        yield src  # type: ignore[misc]


class _Raw(io.RawIOBase):
    # Lets io.BufferedReader wrap any object with .read(), for peek().
    def __init__(self, f: BinaryIO):
        super().__init__()
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)


class BlobStore:
    """``<root>/blobs/sha256/<hex>`` with staging in ``<root>/tmp``."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / "blobs" / "sha256"
        self.tmp = root / "tmp"

    def ensure_dirs(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.dir / check_digest(digest)[len("sha256:") :]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from the image store", obj=digest) from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def digests(self) -> Iterator[str]:
        if not self.dir.is_dir():
            return
        for entry in os.scandir(self.dir):
            if _DIGEST_RE.match("sha256:" + entry.name):
                yield "sha256:" + entry.name

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        return self.put_stream(io.BytesIO(data), expected=expected)[0]

    def put_stream(
        self,
        stream: BinaryIO,
        *,
        expected: str | None = None,
        expected_size: int | None = None,
    ) -> tuple[str, int]:
        """Copy ``stream`` into the store; returns (digest, size).

        With ``expected`` the content must hash to it (InvalidArgument names the
        digest otherwise): content from archives and registries is untrusted.
        """
        if expected is not None:
            check_digest(expected)
        self.ensure_dirs()
        tmp = self.tmp / f"blob-{uuid.uuid4().hex}"
        h = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:
                while chunk := stream.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + h.hexdigest()
            if expected is not None and digest != expected:
                raise InvalidArgument(
                    f"blob {expected} failed verification: content has digest {digest}",
                    obj=expected,
                )
            if expected_size is not None and size != expected_size:
                raise InvalidArgument(
                    f"blob {digest} failed verification: size {size}, expected {expected_size}",
                    obj=digest,
                )
            final = self.path(digest)
            if final.exists():
                tmp.unlink()
            else:
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
            return digest, size
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def put_file(self, path: Path, expected: str | None = None) -> tuple[str, int]:
        with open(path, "rb") as f:
            return self.put_stream(f, expected=expected)

    def delete(self, digest: str) -> int:
        p = self.path(digest)
        try:
            size = p.stat().st_size
            p.unlink()
            return size
        except FileNotFoundError:
            return 0
