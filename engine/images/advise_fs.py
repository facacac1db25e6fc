"""What an image's layers hold, for the advisor: files per layer and the image's
final filesystem after whiteouts, plus what was added and then thrown away.

We walk the unpacked ``diff`` directories the layer store keeps (lowest layer
first) instead of re-reading tars. There a deletion is an overlay whiteout
(char device 0:0) and a directory replaced as a whole carries the
``trusted.overlay.opaque`` xattr, exactly the two things Docker's ``.wh.``
entries become on unpack. A layer's diff is hostile data: we never follow a
symlink in it, and read only files the walk itself found as regular files
(their parents are then real directories of that diff).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass
class LayerFiles:
    """One layer's own content. Sizes count a hard-linked inode once (its
    first path), as the layer store's sizes do."""

    index: int
    root: Path
    files: dict[str, int] = field(default_factory=dict)  # "/a/b" -> bytes (files, symlinks)
    dirs: set[str] = field(default_factory=set)
    whiteouts: list[str] = field(default_factory=list)  # paths this layer deletes
    opaque: list[str] = field(default_factory=list)  # dirs whose lower content it hides

    @property
    def size(self) -> int:
        return sum(self.files.values())

    def read(self, path: str, limit: int = 1 << 20) -> bytes:
        """The first ``limit`` bytes of a file this walk found (never through a link)."""
        if path not in self.files:
            return b""
        try:
            fd = os.open(str(self.root) + path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return b""
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return b""
            return os.read(fd, limit)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Wasted:
    """Bytes a layer ships that the final filesystem no longer shows."""

    path: str
    size: int
    added: int  # layer index that added it
    removed: int  # layer index that deleted or replaced it
    how: str  # "deleted" | "replaced"


@dataclass
class ImageFiles:
    layers: list[LayerFiles]
    live: dict[str, tuple[int, int]]  # final filesystem: path -> (layer index, bytes)
    wasted: list[Wasted]

    def live_under(self, prefixes: Iterable[str]) -> dict[str, tuple[int, int]]:
        pre = tuple(p.rstrip("/") + "/" for p in prefixes)
        return {p: v for p, v in self.live.items() if p.startswith(pre)}

    def top_layer_with(self, path: str) -> LayerFiles | None:
        """The layer whose copy of ``path`` the final filesystem shows."""
        hit = self.live.get(path)
        return self.layers[hit[0]] if hit else None


def walk_layer(index: int, root: Path) -> LayerFiles:
    out = LayerFiles(index, root)
    seen: set[tuple[int, int]] = set()
    # scandir's entries know their type from getdents: no stat for directories,
    # one lstat per file (its size); this walk is the advisor's main cost.
    stack = [(str(root), "")]
    while stack:
        dirpath, rel_dir = stack.pop()
        try:
            entries = list(os.scandir(dirpath))
        except OSError:
            continue
        for e in entries:
            path = rel_dir + "/" + e.name
            try:
                if e.is_dir(follow_symlinks=False):
                    out.dirs.add(path)
                    if _is_opaque(e.path):
                        out.opaque.append(path)
                    stack.append((e.path, path))
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out.whiteouts.append(path)
                continue
            size = st.st_size
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    size = 0
                seen.add(key)
            out.files[path] = size
    return out


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def stack(layers: list[LayerFiles]) -> ImageFiles:
    """Apply the layers in order, as overlayfs shows them, noting every byte a
    lower layer ships that a higher one deletes or replaces."""
    live: dict[str, tuple[int, int]] = {}
    live_dirs: set[str] = set()
    wasted: list[Wasted] = []

    def drop_trees(tops: set[str], by: int) -> None:
        """Remove everything below the directories ``tops`` in one pass over the
        live files (``rm -rf dir/*`` makes hundreds of directory whiteouts)."""
        tops = tops & live_dirs
        if not tops:
            return
        for p in [p for p in live if _under_any(p, tops)]:
            layer, size = live.pop(p)
            wasted.append(Wasted(p, size, layer, by, "deleted"))
        live_dirs.difference_update({d for d in live_dirs if _under_any(d, tops)})

    for layer in layers:
        i = layer.index
        drop_trees(set(layer.opaque), i)  # their content goes, the directories stay
        for w in layer.whiteouts:
            hit = live.pop(w, None)
            if hit is not None:
                wasted.append(Wasted(w, hit[1], hit[0], i, "deleted"))
        gone = set(layer.whiteouts) & live_dirs
        drop_trees(gone, i)
        live_dirs.difference_update(gone)
        for d in layer.dirs:
            hit = live.pop(d, None)  # a directory over a lower file replaces it
            if hit is not None:
                wasted.append(Wasted(d, hit[1], hit[0], i, "replaced"))
        # A file over a lower directory hides that directory's tree.
        covered = {p for p in layer.files if p in live_dirs}
        drop_trees(covered, i)
        live_dirs.difference_update(covered)
        live_dirs.update(layer.dirs)
        for path, size in layer.files.items():
            hit = live.get(path)
            if hit is not None:
                wasted.append(Wasted(path, hit[1], hit[0], i, "replaced"))
            live[path] = (i, size)
    return ImageFiles(layers, live, wasted)


def _under_any(path: str, tops: set[str]) -> bool:
    """Is ``path`` strictly below one of ``tops``? (ancestors looked up, not scanned)"""
    i = path.rfind("/")
    while i > 0:
        path = path[:i]
        if path in tops:
            return True
        i = path.rfind("/")
    return False


def scan_image(layer_dirs: list[Path]) -> ImageFiles:
    return stack([walk_layer(i, Path(d)) for i, d in enumerate(layer_dirs)])


# -- package databases --------------------------------------------------------------------


def installed_packages(img: ImageFiles) -> dict[str, int]:
    """Installed packages of the final filesystem -> bytes, from dpkg's status
    (Installed-Size is in KiB) or apk's database (I: is in bytes)."""
    out: dict[str, int] = {}
    layer = img.top_layer_with("/var/lib/dpkg/status")
    if layer is not None:
        text = layer.read("/var/lib/dpkg/status", 64 << 20).decode("utf-8", "replace")
        for stanza in text.split("\n\n"):
            fields = _fields(stanza, ":")
            if "install ok installed" in fields.get("Status", "") and fields.get("Package"):
                kib = fields.get("Installed-Size", "0").strip()
                out[fields["Package"].strip()] = int(kib) * 1024 if kib.isdigit() else 0
    layer = img.top_layer_with("/lib/apk/db/installed")
    if layer is not None:
        text = layer.read("/lib/apk/db/installed", 64 << 20).decode("utf-8", "replace")
        for stanza in text.split("\n\n"):
            fields = _fields(stanza, ":", short=True)
            if fields.get("P"):
                size = fields.get("I", "0").strip()
                out[fields["P"].strip()] = int(size) if size.isdigit() else 0
    return out


def _fields(stanza: str, sep: str, short: bool = False) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if not line or line[0] in " \t":
            continue  # continuation lines (descriptions, conffiles)
        key, found, value = line.partition(sep)
        if found and (not short or len(key) == 1):
            fields[key] = value.strip()
    return fields
