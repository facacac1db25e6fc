"""Unpacked layers: ``layers/<chain-id hex>/diff``, one directory per chain ID.

Each layer is unpacked once and shared by every image whose layer stack
starts the same way; overlayfs stacks the ``diff`` directories. A layer is
unpacked into ``layers/<hex>.tmp-<random>`` and renamed into place only once
complete (with ``meta.json`` written), so a directory under its final name
is always whole; an interrupted unpack leaves a temporary directory that the
next attempt for the same chain ID removes before it starts again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError, InvalidArgument
from engine.images import layers as layer_tars
from engine.images.content import BlobStore, HashingReader, check_digest, decompressed
from engine.locks import file_lock

META = "meta.json"


@dataclass(frozen=True)
class LayerInfo:
    chain_id: str
    diff_id: str
    size: int  # bytes of content in the unpacked layer (Docker's layer "Size")
    path: Path  # the ``diff`` directory, usable as an overlay lowerdir


def dir_size(root: Path) -> int:
    """Bytes of file content under ``root``, each hard-linked inode counted once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_size
    return total


def _rmtree(path: Path) -> None:
    # Unpacked layers may contain read-only directories; root ignores modes,
    # but make a best effort for non-root test runs too.
    def onerror(func, p, _exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        with contextlib.suppress(OSError):
            func(p)

    shutil.rmtree(path, onerror=onerror)


class LayerStore:
    def __init__(self, root: Path, locks_dir: Path, blobs: BlobStore):
        self.dir = root / "layers"
        self.locks_dir = locks_dir
        self.blobs = blobs

    def _hex(self, chain_id: str) -> str:
        return check_digest(chain_id)[len("sha256:") :]

    def path(self, chain_id: str) -> Path:
        return self.dir / self._hex(chain_id)

    def diff_path(self, chain_id: str) -> Path:
        return self.path(chain_id) / "diff"

    def get(self, chain_id: str) -> LayerInfo | None:
        base = self.path(chain_id)
        try:
            meta = json.loads((base / META).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None
        return LayerInfo(chain_id, meta["diff_id"], int(meta["size"]), base / "diff")

    def chain_ids_on_disk(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return ["sha256:" + e.name for e in os.scandir(self.dir) if ".tmp-" not in e.name]

    def ensure(self, chain_id: str, diff_id: str, blob_digest: str) -> LayerInfo:
        """Unpack blob ``blob_digest`` as layer ``chain_id`` unless already done.

        The uncompressed content must hash to ``diff_id``: that is how a
        layer from an archive or registry is verified against the image config.
        """

        def fill(diff_dir: Path) -> None:
            with self.blobs.open(blob_digest) as raw, decompressed(raw) as plain:
                # Hash the *uncompressed* bytes: that is what the diff ID names.
                reader = HashingReader(plain)
                layer_tars.extract_layer(reader, diff_dir)  # type: ignore[arg-type]
                reader.drain()
            if reader.digest != diff_id:
                raise InvalidArgument(
                    f"layer {blob_digest} failed verification: uncompressed content has "
                    f"digest {reader.digest}, the image config says {diff_id}",
                    obj=blob_digest,
                )

        return self.install(chain_id, diff_id, fill)

    def install(self, chain_id: str, diff_id: str, fill: Callable[[Path], None]) -> LayerInfo:
        """Layer ``chain_id`` made by ``fill(diff_dir)`` unless already there.

        ``fill`` writes the layer's content into an empty directory and must
        verify it (raise to refuse it: nothing is installed). It is called under
        the layer's lock, in a staging directory renamed into place only after
        ``meta.json`` is written; not at all if the layer exists (or appears
        while waiting for the lock: another process made it).
        """
        info = self.get(chain_id)
        if info is not None:
            return info
        hexid = self._hex(chain_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        # The per-layer lock makes two processes unpacking the same layer wait
        # for each other instead of both doing the work.
        with file_lock(self.locks_dir / f"images-layer-{hexid}.lock"):
            info = self.get(chain_id)
            if info is not None:
                return info
            final = self.path(chain_id)
            # Leftovers of an interrupted unpack of this layer: safe to remove
            # because we hold its lock, so nobody is writing them.
            for stale in self.dir.glob(f"{hexid}.tmp-*"):
                _rmtree(stale)
            if final.exists():  # a final dir without meta.json is not ours to trust
                _rmtree(final)
            tmp = self.dir / f"{hexid}.tmp-{uuid.uuid4().hex[:12]}"
            (tmp / "diff").mkdir(parents=True)
            try:
                fill(tmp / "diff")
                size = dir_size(tmp / "diff")
                meta = {"chain_id": chain_id, "diff_id": diff_id, "size": size}
                (tmp / META).write_text(json.dumps(meta))
                os.replace(tmp, final)
            except BaseException:
                _rmtree(tmp)
                raise
            return LayerInfo(chain_id, diff_id, size, final / "diff")

    def remove(self, chain_id: str) -> bool:
        base = self.path(chain_id)
        if not base.exists():
            return False
        # Rename first so a half-deleted layer never looks complete.
        doomed = self.dir / f"{self._hex(chain_id)}.tmp-rm-{uuid.uuid4().hex[:12]}"
        try:
            os.replace(base, doomed)
        except OSError as e:
            raise EngineError(
                f"cannot remove layer {chain_id}: {e}", obj=chain_id, errno=e.errno
            ) from e
        _rmtree(doomed)
        return True

    def remove_stale_tmp(self) -> None:
        """Remove every temporary directory; only call with the GC lock held exclusively."""
        if self.dir.is_dir():
            for e in self.dir.glob("*.tmp-*"):
                _rmtree(e)
