"""What Berth knows about blobs held elsewhere, so a push can skip work
(Docker keeps the same "v2 metadata"):

- ``compressed``: for a layer stored here uncompressed (its digest is its
  diff ID), the gzip blob a push made of it. A later push of that layer
  asks the registry for that blob (HEAD, or a mount) before compressing again.
- ``locations``: repositories that hold a blob (it was pulled from or pushed
  there), the sources of cross-repository mounts on the same registry.

A cache only: losing ``<root>/registry/blobinfo.json`` costs time, never
correctness (a registry is always asked before a blob is skipped).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from engine.locks import file_lock

MAX_LOCATIONS = 8  # per blob, the most recent
MAX_ENTRIES = 20000  # per table; the oldest go first


class BlobInfoCache:
    def __init__(self, path: Path, lock_path: Path):
        self.path = Path(path)
        self.lock_path = Path(lock_path)
        self._data: dict | None = None

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data.setdefault("compressed", {})
        data.setdefault("locations", {})
        return data

    @property
    def data(self) -> dict:
        if self._data is None:
            self._data = self._load()
        return self._data

    def locations(self, digest: str) -> list[tuple[str, str]]:
        """(registry host, repository) pairs known to hold ``digest``, newest first."""
        out = []
        for loc in reversed(self.data["locations"].get(digest, [])):
            host, _, repo = loc.partition("/")
            if host and repo:
                out.append((host, repo))
        return out

    def compressed(self, diff_id: str) -> list[dict]:
        """Known compressed forms of the layer ``diff_id``: [{digest, size, mediaType}]."""
        return list(reversed(self.data["compressed"].get(diff_id, [])))

    def record(
        self,
        *,
        locations: Iterable[tuple[str, str, str]] = (),
        compressed: Iterable[tuple[str, dict]] = (),
    ) -> None:
        """Remember (digest, host, repo) locations and (diff ID, descriptor) pairs."""
        locations, compressed = list(locations), list(compressed)
        if not locations and not compressed:
            return
        with file_lock(self.lock_path):
            data = self._load()
            locs = data["locations"]
            for digest, host, repo in locations:
                entry = f"{host}/{repo}"
                items = [x for x in locs.pop(digest, []) if x != entry] + [entry]
                locs[digest] = items[-MAX_LOCATIONS:]
            comp = data["compressed"]
            for diff_id, desc in compressed:
                d = {k: desc[k] for k in ("digest", "size", "mediaType") if k in desc}
                items = [x for x in comp.pop(diff_id, []) if x.get("digest") != d.get("digest")]
                comp[diff_id] = (items + [d])[-MAX_LOCATIONS:]
            for table in (locs, comp):
                while len(table) > MAX_ENTRIES:
                    del table[next(iter(table))]
            self._write(data)
            self._data = data

    def _write(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.urandom(16).hex()}")
        try:
            with open(tmp, "w") as f:
                json.dump(data, f, separators=(",", ":"))
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
