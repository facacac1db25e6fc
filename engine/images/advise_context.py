"""The build context as the advisor sees it: which files a build would send
(after ``.dockerignore``), how big they are, and which of them a COPY/ADD
source names. The walk never follows a symlink (a link is sent as a link)."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.images import advise_rules as R

MAX_FILES = 500_000  # stop counting past this: the report says "at least"


@dataclass
class Context:
    path: Path
    dockerignore: Path | None
    files: dict[str, int] = field(default_factory=dict)  # "a/b.txt" -> bytes, not ignored
    ignored_bytes: int = 0
    truncated: bool = False

    @property
    def size(self) -> int:
        return sum(self.files.values())

    def junk(self) -> dict[str, int]:
        """Bytes in directories a .dockerignore usually excludes (.git, node_modules...)."""
        out: dict[str, int] = {}
        for rel, size in self.files.items():
            parts = rel.split("/")[:-1]
            for j in R.CONTEXT_JUNK_DIRS:
                if j in parts:
                    top = "/".join(parts[: parts.index(j) + 1])
                    out[top] = out.get(top, 0) + size
                    break
        return out

    def select(self, source: str) -> dict[str, int]:
        """Files a COPY/ADD source (relative to the context, wildcards allowed) sends."""
        src = os.path.normpath(source.lstrip("/") or ".")
        if src == ".":
            return dict(self.files)
        if any(c in src for c in "*?["):
            hits = [r for r in self.files if _glob_prefix(src, r)]
            return {r: self.files[r] for r in hits}
        if src in self.files:
            return {src: self.files[src]}
        pre = src.rstrip("/") + "/"
        return {r: s for r, s in self.files.items() if r.startswith(pre)}


def _glob_prefix(pattern: str, rel: str) -> bool:
    """Does ``pattern`` match ``rel`` or one of its parent directories?"""
    parts = rel.split("/")
    want = pattern.strip("/").split("/")
    if len(parts) < len(want):
        return False
    return all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, want, strict=False))


def read_context(path: Path, dockerfile: Path) -> Context:
    # The .dockerignore the builder would use, read as it reads it (inside the context).
    from engine.build.context import ignore_file, rel_in_context
    from engine.build.dockerignore import Matcher, read_patterns
    from engine.safepath import open_root

    df_rel = rel_in_context(path, dockerfile)
    rfd = open_root(path)
    try:
        found = ignore_file(rfd, df_rel, None if df_rel else dockerfile)
    finally:
        os.close(rfd)
    matcher = Matcher(read_patterns(found[1] if found else "")).excluded
    ctx = Context(path, path / found[0] if found else None)
    always = {".dockerignore", df_rel or dockerfile.name}  # sent even when excluded
    base = str(path)
    count = 0
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):
                dirnames.remove(name)
                filenames.append(name)
        for name in filenames:
            count += 1
            if count > MAX_FILES:
                ctx.truncated = True
                return ctx
            rel = rel_dir + name
            try:
                size = os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
            if matcher(rel) and rel not in always:
                ctx.ignored_bytes += size
            else:
                ctx.files[rel] = size
    return ctx


def key_files(ctx: Context, files: dict[str, int]) -> list[tuple[str, int, str]]:
    """(path, size, kind) of private keys and credential files among ``files``."""
    out = []
    for rel, size in files.items():
        markers = R.key_file_markers("/" + rel)
        if not markers or size > (256 << 10):
            continue
        try:
            fd = os.open(ctx.path / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            data = os.read(fd, 256 << 10)
        finally:
            os.close(fd)
        if any(m in data for m in markers):
            out.append((rel, size, "private key" if R.KEY_MARKER in markers else "credentials"))
    return out
