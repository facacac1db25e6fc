"""The build cache: a step's key -> the image that step made.

Keys are computed as Docker computes them (see :func:`step_key`): the parent
image ID plus the instruction after variable substitution; RUN adds the
build arguments in scope (they are in its environment); COPY/ADD add the
hash of the content and metadata of every file they copy. The images are
ordinary (untagged) images in the image store, so ``image prune`` and the
store's GC treat them like Docker's intermediate images.

Entries are files ``<root>/build/cache/<key hex>`` holding the image ID,
written (fsync'd temp file + rename) only after the image is registered, so
a crash mid-build leaves either no entry or a whole one. An entry whose
image has gone (pruned, removed) is a miss and is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import InvalidArgument, NotFound

__all__ = ["BuildCache", "step_key"]

if TYPE_CHECKING:
    from engine.images.store import ImageRecord, ImageStore


def step_key(parent: str, instruction: str, extra: object = None) -> str:
    """sha256 of the parent image ID, the instruction and any extra input."""
    payload = json.dumps([parent, instruction, extra], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()


class BuildCache:
    def __init__(self, build_root: Path, store: ImageStore):
        self.dir = build_root / "cache"
        self.store = store
        self._swept = False

    def _path(self, key: str) -> Path:
        return self.dir / key

    def get(self, key: str) -> ImageRecord | None:
        """The cached image for ``key``, or None."""
        try:
            image_id = self._path(key).read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return self.store.get_by_id(image_id, include_removed=False)
        except (NotFound, InvalidArgument, ValueError):
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()  # its image is gone: a stale entry
            return None

    def put(self, key: str, image_id: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self._swept:  # once, at the first write: a cached rebuild lists nothing
            self._swept = True
            self.remove_stale_tmp()
        tmp = self.dir / f".tmp-{os.getpid()}-{os.urandom(16).hex()}"
        try:
            with open(tmp, "w") as f:
                f.write(image_id + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(key))
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def remove_stale_tmp(self) -> None:
        """Temp files of builders that died between write and rename."""
        if not self.dir.is_dir():
            return
        for p in self.dir.glob(".tmp-*"):
            pid = p.name.split("-")[1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(OSError):
                    p.unlink()

    def clear(self) -> int:
        n = 0
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                with contextlib.suppress(OSError):
                    p.unlink()
                    n += 1
        return n
