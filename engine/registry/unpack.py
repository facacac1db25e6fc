"""One pass per layer: the registry's bytes are hashed, written to the blob's
staging file and, in the same read, inflated, hashed again (the diff ID) and
unpacked into the layer's staging directory. Neither is installed until both
digests are right, so a tampered blob leaves nothing behind; and no byte is
read twice (a separate unpack would read the whole blob back and inflate it
after the download, instead of while the next bytes are on their way).

Where the CPU time of a pull goes (a 50 MB, 3-layer image on 2 cores): inflating
~40%, the two SHA-256s ~20%, the kernel (file writes, socket reads) ~25%; so the
loop around them is kept lean: the network is read into reused buffers, zlib
works in small steps (no large buffers coming and going, which cost page faults)
and hands its output to the tar reader, which writes it to the layer's files as
is (engine.images.layers.TarSource); the gzip framing is read here so zlib's
CRC-32, which the digests make redundant, is not computed. Layers stream in
parallel (one thread each); when fewer stream than there are cores, each one's
network side gets a thread of its own (``Prefetch``).

The layer is installed by the layer store (``LayerStore.install``: under the
layer's lock, into a staging directory, renamed once whole); this module
only supplies the content and its checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import queue
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
from engine.registry.staging import WRITEBACK_STEP, start_writeback

try:  # ISA-L's inflate (the optional ``isal`` package): zlib's API, ~1.7x its speed
    from isal import isal_zlib as _inflate_lib
except ImportError:
    _inflate_lib = zlib

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
        self._written_back = 0  # bytes of ``out`` whose writeback has been started
        try:
            self._out_fd: int | None = out.fileno()
        except (OSError, io.UnsupportedOperation):
            self._out_fd = None  # in memory

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
            self.count, self.hash, self._written_back = 0, hashlib.sha256(), 0
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
            if self._out_fd is not None and self.count - self._written_back >= WRITEBACK_STEP:
                self.out.flush()
                start_writeback(self._out_fd, self._written_back)
                self._written_back = self.count
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


# Inflating in small steps keeps every buffer small (no page faults per chunk as large
# buffers come and go): a step's output is at most OUT_STEP, handed on as is, its
# input at most IN_STEP compressed bytes, so what zlib leaves unconsumed (and copies)
# stays small too.
NET_CHUNK = 256 * 1024
IN_STEP = 64 * 1024
OUT_STEP = 256 * 1024
GZIP_HEADER_MAX = 1 << 20  # names and comments of real layers are a few bytes, if any

_HEADER, _BODY, _TRAILER, _BETWEEN, _END = range(5)


def _gzip_header_length(h: bytes) -> int | None:
    """Length of the gzip member header at the start of ``h`` (RFC 1952), None if
    ``h`` ends before it does; InvalidArgument-worthy ValueError if it is no gzip header."""
    for i, want in enumerate((0x1F, 0x8B, 8)):
        if len(h) > i and h[i] != want:
            raise ValueError("not a gzip stream" if i < 2 else "unknown compression method")
    if len(h) < 10:
        return None
    flags = h[3]
    if flags & 0xE0:
        raise ValueError("reserved gzip header flags set")
    i = 10
    if flags & 0x04:  # FEXTRA
        if len(h) < i + 2:
            return None
        i += 2 + int.from_bytes(h[i : i + 2], "little")
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: NUL-terminated
        if flags & flag:
            if len(h) <= i:
                return None
            j = h.find(b"\0", i)
            if j < 0:
                return None
            i = j + 1
    if flags & 0x02:  # FHCRC
        i += 2
    return i if len(h) >= i else None


class Gunzip:
    """gzip -> plain bytes (several members too) as ``next_chunk()`` hands them out,
    from the compressed bytes ``next_input()`` hands in (each consumed before the
    next call), hashing the plain bytes (the diff ID). Zero padding after the last
    member is allowed, as gzip does; a stream that ends early or whose length field
    disagrees is an error.

    The members' headers and trailers are read here and the deflate data inflated
    raw: zlib's CRC-32 of the output is not computed (about a tenth of the CPU time
    of a pull) because it would catch nothing the two digests do not: the blob's
    (over every compressed byte, from the manifest) and the diff ID (over every
    plain byte, from the config) are both checked before anything is installed.
    """

    def __init__(self, next_input: Callable[[], memoryview], what: str):
        self._next_input = next_input
        self.what = what
        self.hash = hashlib.sha256()
        self._in = memoryview(b"")  # the input being read: _in[_pos:]
        self._pos = 0
        self._state = _HEADER
        self._z = None
        self._hdr = b""  # a header cut by the end of a read
        self._trailer = b""
        self._size = 0  # plain bytes of the current member
        self._padded = False

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()

    def _corrupt(self, why: object) -> InvalidArgument:
        return InvalidArgument(f"{self.what}: corrupt gzip stream: {why}")

    def next_chunk(self) -> bytes:
        """The next plain bytes (at most OUT_STEP), b"" at the end of the stream."""
        while self._state != _END:
            if self._pos == len(self._in):
                self._in, self._pos = self._next_input(), 0
                if not len(self._in):  # the end of the input
                    if self._state == _BETWEEN:
                        self._state = _END
                        break
                    if self._state != _BODY:
                        raise InvalidArgument(f"{self.what}: truncated gzip stream")
                    out = self._inflate(b"")  # what zlib still holds, if anything
                    if out:
                        return out
                    if self._state == _BODY:
                        raise InvalidArgument(f"{self.what}: truncated gzip stream")
                    continue
            state = self._state
            if state == _BODY:
                out = self._inflate(self._in[self._pos : self._pos + IN_STEP])
                if out:
                    return out
            elif state == _HEADER:
                self._header()
            elif state == _TRAILER:
                take = bytes(self._in[self._pos : self._pos + 8 - len(self._trailer)])
                self._pos += len(take)
                self._trailer += take
                if len(self._trailer) == 8:
                    if int.from_bytes(self._trailer[4:], "little") != self._size & 0xFFFFFFFF:
                        raise self._corrupt("length does not match the trailer")
                    self._state, self._trailer, self._size = _BETWEEN, b"", 0
            else:  # _BETWEEN: another member, or zero padding to the end
                rest = bytes(self._in[self._pos :])
                data = rest.lstrip(b"\0")
                if self._padded or len(data) < len(rest):
                    if data:
                        raise self._corrupt("data after the zero padding at its end")
                    self._padded = True
                    self._pos = len(self._in)
                else:
                    self._state = _HEADER
        return b""

    def _header(self) -> None:
        take = bytes(self._in[self._pos : self._pos + GZIP_HEADER_MAX - len(self._hdr)])
        head = self._hdr + take if self._hdr else take
        try:
            length = _gzip_header_length(head)
        except ValueError as e:
            raise self._corrupt(e) from None
        if length is None:
            if len(head) >= GZIP_HEADER_MAX:
                raise self._corrupt(f"header longer than {GZIP_HEADER_MAX} bytes")
            self._hdr = head
            self._pos += len(take)
            return
        self._pos += length - len(self._hdr)
        self._hdr = b""
        self._z = _inflate_lib.decompressobj(-zlib.MAX_WBITS)
        self._state = _BODY

    def _inflate(self, step) -> bytes:
        z = self._z
        try:
            out = z.decompress(step, OUT_STEP)
        except (zlib.error, _inflate_lib.error) as e:
            raise self._corrupt(e) from None
        if z.eof:  # what follows the deflate data is in unused_data (and unconsumed_tail too)
            self._pos += len(step) - len(z.unused_data)
            self._state, self._z = _TRAILER, None
        else:
            self._pos += len(step) - len(z.unconsumed_tail)
        if out:
            self._size += len(out)
            self.hash.update(out)
        return out

    def drain(self) -> None:
        while self.next_chunk():
            pass


class Prefetch:
    """``src`` (``readinto``) read on a thread of its own, a few buffers ahead of its
    consumer (``next_chunk()``: a view valid until the next call): the network, the
    blob's hash and its file on one core while the consumer inflates and unpacks on
    another. An error of the reader is raised to the consumer, in order."""

    def __init__(self, src, name: str, size: int = NET_CHUNK, depth: int = 4):
        self.src = src
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._full: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(depth):
            self._free.put(bytearray(size))
        self._held: bytearray | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (buf := self._free.get()) is not None:
                n = self.src.readinto(buf)
                self._full.put((buf, n))
                if not n:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._full.put(e)

    def next_chunk(self) -> memoryview:
        if self._held is not None:
            self._free.put(self._held)
            self._held = None
        if self._done:
            return memoryview(b"")
        item = self._full.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        buf, n = item
        if not n:
            self._done = True
            return memoryview(b"")
        self._held = buf
        return memoryview(buf)[:n]

    def drain(self) -> None:
        """Let the reader read to the end (what it reads is only hashed and stored)."""
        while len(self.next_chunk()):
            pass

    def close(self) -> None:
        """Stop the reader at its next buffer and wait for it."""
        self._free.put(None)
        self._thread.join()


def _verify_rest(src: BlobStream, pipe: Prefetch | None) -> None:
    """After bad layer data: read the rest of the blob and raise only if its digest
    (or size) proves it is not the blob asked for. A failure to read it (network,
    retries spent) is swallowed: the caller re-raises its own error."""
    try:
        if pipe is not None:
            pipe.drain()  # the reader thread's own error comes out here, in order
        src.finish()  # after a drain only checks; else reads what is left first
    except Cancelled:
        raise  # another layer failed: this one just stops, as everywhere else
    except InvalidArgument:
        raise  # BlobStream's only InvalidArgument: a digest, size or length refused
    except Exception:  # noqa: BLE001 - the caller's error is the one to report
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
    prefetch: bool = False,
) -> tuple[int, bool]:
    """Stream one layer blob into ``blob_out`` and its unpacked layer into the
    layer store; verified both ways. -> (bytes fetched, unpacked here?).
    The caller installs ``blob_out`` (verified) into the blob store.

    With ``prefetch`` the network side (reading, hashing, writing the blob) runs on
    a thread of its own: worth it when fewer layers stream at once than there are
    cores (a single layer then uses two), not when they keep every core busy."""
    unpacked = False
    src = BlobStream(client, repo, desc, blob_out, what, report=report, cancel=cancel)

    def fill(diff_dir: Path) -> None:
        nonlocal unpacked
        # An uncompressed layer's blob digest is its diff ID: one hash is enough.
        pipe = gunzip = None
        if gzipped:
            if prefetch:
                pipe = Prefetch(src, name=f"{threading.current_thread().name}-fetch")
            source = pipe.next_chunk if pipe else layer_tars.chunks_of(src, NET_CHUNK)
            gunzip = Gunzip(source, f"layer {desc['digest']} of {what}")
        try:
            if gunzip is not None:
                layer_tars.extract_layer_from(layer_tars.TarSource(gunzip.next_chunk), diff_dir)
                gunzip.drain()
            else:
                layer_tars.extract_layer(io.BufferedReader(src, NET_CHUNK), diff_dir)
        except (Cancelled, RegistryError):
            raise
        except Exception as e:
            # Bad gzip or tar data: if the blob is not the one asked for, say that.
            # Only that verdict may replace the error: reading the rest can fail
            # too (the connection breaks, the retries run out), and then the bad
            # data is still what went wrong, and what the user must hear about.
            _verify_rest(src, pipe)
            label = f"layer {desc['digest']} of {what}"
            if isinstance(e, EngineError) and not str(e).startswith(label):
                # A bad entry (the extractor names only the entry): which layer of which image.
                raise type(e)(f"{label}: {e}", obj=desc["digest"], errno=e.errno) from None
            raise
        finally:
            if pipe is not None:
                pipe.close()
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
