"""One pass per layer: the registry's bytes are hashed, written to the blob's
staging file and, in the same read, inflated, hashed again (the diff ID) and
unpacked into the layer's staging directory. Neither is installed until both
digests are right, so a tampered blob leaves nothing behind; and no byte is
read twice (a separate unpack would read the whole blob back and inflate it
after the download, instead of while the next bytes are on their way).

The layer is installed by the layer store (``LayerStore.install``: under the
layer's lock, into a staging directory, renamed once whole); this module
only supplies the content and its checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from engine.errors import EngineError, InvalidArgument
from engine.images import layers as layer_tars
from engine.images.content import CHUNK
from engine.images.layerstore import LayerStore
from engine.registry.client import RegistryClient, describe_oserror
from engine.registry.errors import RegistryError

MAX_ATTEMPTS = 3


class Cancelled(Exception):
    """Another layer failed: this one stops at its next read."""


class NotResumable(RegistryError):
    """The connection broke and the registry ignored the ``Range`` request, but
    the bytes read so far are consumed (unpacked): only a fresh start works."""


class BlobStream(io.RawIOBase):
    """A blob as the registry sends it, hashed and copied to ``out`` as it is read.

    A connection that breaks is resumed with a ``Range`` request. When the
    registry ignores it (a whole 200 answer) a ``restartable`` stream (one only
    ``finish()`` reads) starts over; another raises ``NotResumable``.
    ``finish()`` reads to the end and checks the digest and size against the
    descriptor.
    """

    def __init__(
        self,
        client: RegistryClient,
        repo: str,
        desc: dict,
        out: io.BufferedWriter | io.FileIO,
        what: str,
        *,
        report: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        restartable: bool = False,
    ):
        super().__init__()
        self.client, self.repo, self.out, self.what = client, repo, out, what
        self.restartable = restartable
        self.digest, self.size = desc["digest"], desc["size"]
        self.report = report
        self.cancel = cancel
        self.hash = hashlib.sha256()
        self.count = 0
        self._resp = None
        self._attempt = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        self._attempt += 1
        resp = self.client.get_blob(self.repo, self.digest, offset=self.count)
        if self.count and resp.status != 206:
            # The registry ignored the Range: the answer is the whole blob again.
            if not self.restartable:
                resp.close()
                raise NotResumable(
                    f"{self.what}: the registry cannot resume blob {self.digest}",
                    obj=self.digest,
                )
            self.count, self.hash = 0, hashlib.sha256()
            self.out.seek(0)
            self.out.truncate()
        self._resp = resp

    def readinto(self, b) -> int:  # type: ignore[override]
        while True:
            if self._done:
                return 0
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled()
            try:
                if self._resp is None:
                    self._open()
                n = self._resp.readinto(b)
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                if self._attempt >= MAX_ATTEMPTS:
                    raise RegistryError(
                        f"fetching blob {self.digest} of {self.what} failed after {self._attempt} "
                        f"attempts: {describe_oserror(e)}",
                        obj=self.digest,
                    ) from None
                continue
            if n == 0:
                self._resp.release()
                self._resp = None
                if self.count < self.size and self._attempt < MAX_ATTEMPTS:
                    continue  # a short body: resume where it stopped
                self._done = True
                return 0
            self.count += n
            if self.count > self.size:
                self._drop()
                raise InvalidArgument(
                    f"blob {self.digest} of {self.what} failed verification: the registry sent more "
                    f"than the {self.size} bytes its descriptor says; refused",
                    obj=self.digest,
                )
            view = memoryview(b)[:n]
            self.hash.update(view)
            self.out.write(view)
            if self.report is not None:
                self.report(self.count)
            return n

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def finish(self) -> None:
        """Read what the consumer left, then verify the whole blob."""
        buf = bytearray(CHUNK)
        while self.readinto(buf):
            pass
        actual = "sha256:" + self.hash.hexdigest()
        if actual != self.digest or self.count != self.size:
            raise InvalidArgument(
                f"blob {self.digest} of {self.what} failed verification: the registry sent "
                f"{self.count} bytes with digest {actual} ({self.size} bytes expected); refused",
                obj=self.digest,
            )

    def close(self) -> None:
        self._drop()
        super().close()


class Gunzip(io.RawIOBase):
    """gzip -> plain bytes (several members too), reading ``src`` in large chunks
    and hashing what it hands out (the diff ID). zlib checks each member's CRC
    and length; a stream that ends early is an error."""

    def __init__(self, src: io.RawIOBase, what: str):
        super().__init__()
        self.src, self.what = src, what
        self.hash = hashlib.sha256()
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._buf = bytearray(CHUNK)
        self._view = memoryview(self._buf)
        self._input: bytes | memoryview = b""
        self._eof = False
        self._between = False  # at the end of a member: the stream may end here

    def readable(self) -> bool:
        return True

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        """Up to ``size`` plain bytes, straight from zlib: the layer extractor's
        buffer copies them once, no buffer of ours in between."""
        want = CHUNK if size is None or size < 0 else size
        while not self._eof and want:
            if not self._input:
                n = self.src.readinto(self._buf)
                if n == 0:
                    if not self._between:
                        raise InvalidArgument(f"{self.what}: truncated gzip stream")
                    self._eof = True
                    break
                self._input = self._view[:n]
                if self._between:
                    if not bytes(self._input).strip(b"\0"):
                        self._input = b""
                        continue  # zero padding after the last member, as gzip allows
                    self._between = False
            try:
                out = self._z.decompress(self._input, want)
            except zlib.error as e:
                raise InvalidArgument(f"{self.what}: corrupt gzip stream: {e}") from None
            self._input = self._z.unconsumed_tail
            if self._z.eof:
                rest = self._z.unused_data + self._input
                self._z = zlib.decompressobj(zlib.MAX_WBITS | 16)
                self._input = rest if rest.strip(b"\0") else b""
                self._between = not self._input
            if out:
                self.hash.update(out)
                return out
        return b""

    def readinto(self, b) -> int:  # type: ignore[override]
        out = self.read(len(b))
        b[: len(out)] = out
        return len(out)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def fetch_and_unpack(
    client: RegistryClient,
    repo: str,
    desc: dict,
    *,
    gzipped: bool,
    blob_out: BinaryIO,
    layers: LayerStore,
    chain_id: str,
    diff_id: str,
    what: str,
    report: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[int, bool]:
    """Stream one layer blob into ``blob_out`` and its unpacked layer into the
    layer store; verified both ways. -> (bytes fetched, unpacked here?).
    The caller installs ``blob_out`` (verified) into the blob store."""
    unpacked = False
    src = BlobStream(client, repo, desc, blob_out, what, report=report, cancel=cancel)

    def fill(diff_dir: Path) -> None:
        nonlocal unpacked
        # An uncompressed layer's blob digest is its diff ID: one hash is enough.
        gunzip = Gunzip(src, f"layer {desc['digest']} of {what}") if gzipped else None
        reader = gunzip or io.BufferedReader(src, CHUNK)
        try:
            layer_tars.extract_layer(reader, diff_dir)
            if gunzip is not None:
                gunzip.drain()
        except (Cancelled, RegistryError):
            raise
        except Exception as e:
            # Bad gzip or tar data: if the blob is not the one asked for, say that.
            src.finish()
            label = f"layer {desc['digest']} of {what}"
            if isinstance(e, EngineError) and not str(e).startswith(label):
                # A bad entry (the extractor names only the entry): which layer of which image.
                raise type(e)(f"{label}: {e}", obj=desc["digest"], errno=e.errno) from None
            raise
        src.finish()  # a tampered blob stops here, before anything is installed
        actual = gunzip.digest if gunzip is not None else "sha256:" + src.hash.hexdigest()
        if actual != diff_id:
            raise InvalidArgument(
                f"layer {desc['digest']} of {what} failed verification: uncompressed content has "
                f"digest {actual}, the image config says {diff_id}; refused",
                obj=desc["digest"],
            )
        unpacked = True

    try:
        layers.install(chain_id, diff_id, fill)
        if not unpacked:
            src.finish()  # the layer was there already: just the blob
    finally:
        with contextlib.suppress(Exception):
            src.close()
    return src.count, unpacked
