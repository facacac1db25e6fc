"""engine.build.copy (sources, hashing, destinations) and engine.build.cache, without containers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from engine.build import copy as cp
from engine.build.cache import BuildCache, step_key
from engine.build.dockerignore import Matcher, read_patterns
from engine.errors import InvalidArgument, InvalidState, NotFound
from engine.safepath import open_root


@pytest.fixture
def ctx(tmp_path):
    root = tmp_path / "ctx"
    for rel, text in {
        "a.txt": "a",
        "b.txt": "b",
        "dir/one.py": "1",
        "dir/sub/two.py": "2",
        "dir/skip.log": "log",
        "other/c.txt": "c",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink(str(tmp_path / "outside.txt"), root / "link-out")
    os.symlink("dir", root / "dirlink")
    fd = open_root(root)
    yield root, fd
    os.close(fd)


def _none(_rel: str) -> bool:
    return False


def test_find_sources_wildcards_and_errors(ctx):
    root, fd = ctx
    found = cp.find_sources(fd, ["*.txt", "dir"], _none, "COPY")
    assert [(s.rel, s.is_dir) for s in found] == [("a.txt", False), ("b.txt", False), ("dir", True)]
    found = cp.find_sources(fd, ["*/*.txt"], _none, "COPY")
    assert [s.rel for s in found] == ["other/c.txt"]
    # A parent that is a link resolves inside the context: the source is named by its real path.
    assert cp.find_sources(fd, ["dirlink/one.py"], _none, "COPY")[0].rel == "dir/one.py"
    with pytest.raises(InvalidArgument, match="forbidden path outside the build context"):
        cp.find_sources(fd, ["../outside.txt"], _none, "COPY")
    with pytest.raises(NotFound, match="file not found in build context"):
        cp.find_sources(fd, ["missing"], _none, "COPY")
    with pytest.raises(NotFound, match="no source files were specified"):
        cp.find_sources(fd, ["*.nothing"], _none, "COPY")
    ignore = Matcher(read_patterns("a.txt\n"))
    with pytest.raises(NotFound, match="excluded by .dockerignore"):
        cp.find_sources(fd, ["a.txt"], ignore.excluded, "COPY")
    assert [s.rel for s in cp.find_sources(fd, ["*.txt"], ignore.excluded, "COPY")] == ["b.txt"]


def test_walk_keeps_links_and_applies_ignore(ctx):
    root, fd = ctx
    (src,) = cp.find_sources(fd, ["."], _none, "COPY")
    ignore = Matcher(read_patterns("**/*.log\n"))
    entries = list(cp.walk(fd, src, "app", ignore.excluded, ignore.may_include_below))
    by = {e.rel: e for e in entries}
    assert "dir/skip.log" not in by
    assert by["link-out"].link.endswith("outside.txt") and by["link-out"].dest == "app/link-out"
    assert by["dirlink"].link == "dir"
    assert by["dir/sub/two.py"].dest == "app/dir/sub/two.py"
    assert entries[0].rel == "" and entries[0].dest == "app"


def _hash(fd, pattern="dir") -> str:
    h = hashlib.sha256()
    for s in cp.find_sources(fd, [pattern], _none, "COPY"):
        cp.hash_entries(fd, list(cp.walk(fd, s, "", _none, _none)), h)
    return h.hexdigest()


def test_hash_sees_content_and_mode_not_mtime(ctx):
    root, fd = ctx
    first = _hash(fd)
    os.utime(root / "dir/one.py", (1, 1))
    assert _hash(fd) == first
    st = os.stat(root / "dir/sub/two.py")
    (root / "dir/sub/two.py").write_text("3")  # same size, new content
    os.utime(root / "dir/sub/two.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    second = _hash(fd)
    assert second != first
    os.chmod(root / "dir/one.py", 0o700)
    assert _hash(fd) != second


def test_destinations_follow_dockers_rules(ctx, tmp_path):
    root, fd = ctx
    image = tmp_path / "image"
    (image / "existing").mkdir(parents=True)
    one = cp.find_sources(fd, ["a.txt"], _none, "COPY")
    assert cp.plan_destinations(one, "/x", "/", str(image), "COPY")[0][1] == "x"
    assert cp.plan_destinations(one, "/x/", "/", str(image), "COPY")[0][1] == "x/a.txt"
    assert cp.plan_destinations(one, "/existing", "/", str(image), "COPY")[0][1] == "existing/a.txt"
    assert cp.plan_destinations(one, "rel", "/srv", str(image), "COPY")[0][1] == "srv/rel"
    assert cp.plan_destinations(one, ".", "/srv", str(image), "COPY")[0][1] == "srv/a.txt"
    two = cp.find_sources(fd, ["*.txt"], _none, "COPY")
    with pytest.raises(InvalidArgument, match="destination must be a directory and end with a /"):
        cp.plan_destinations(two, "/x", "/", str(image), "COPY")
    d = cp.find_sources(fd, ["dir"], _none, "COPY")
    assert cp.plan_destinations(d, "/x", "/", str(image), "COPY")[0][1] == "x"


class _Store:
    def __init__(self, live: set[str]):
        self.live = live

    def get_by_id(self, image_id: str, include_removed: bool = True):
        if image_id not in self.live:
            raise NotFound(f"No such image: {image_id}")
        return image_id


def test_cache_entries_are_whole_and_heal(tmp_path):
    live = {"sha256:" + "a" * 64}
    cache = BuildCache(tmp_path / "build", _Store(live))
    key = step_key("sha256:" + "0" * 64, "RUN echo hi", {"x": 1})
    assert key != step_key("sha256:" + "0" * 64, "RUN echo hi", {"x": 2})
    assert cache.get(key) is None
    cache.put(key, "sha256:" + "a" * 64)
    assert cache.get(key) == "sha256:" + "a" * 64
    assert [p.name for p in cache.dir.iterdir()] == [key]  # no temp file left
    live.clear()  # the image was pruned: a miss, and the entry goes
    assert cache.get(key) is None and not (cache.dir / key).exists()
    # A temp file of a dead writer is removed; one of a live writer is kept.
    dead = cache.dir / ".tmp-999999999-x"
    mine = cache.dir / f".tmp-{os.getpid()}-y"
    dead.write_text("partial")
    mine.write_text("partial")
    cache.remove_stale_tmp()
    assert not dead.exists() and mine.exists()
    assert Path(cache.dir).is_dir() and cache.clear() == 1


def test_copy_writes_only_the_bytes_hashed_for_the_key(ctx, tmp_path):
    # The cache key is computed before the copy: a file edited in between must not put
    # its new bytes under the old key (a later build with the old content would reuse them).
    root, fd = ctx
    image = tmp_path / "image"
    image.mkdir()
    (src,) = cp.find_sources(fd, ["dir"], _none, "COPY")
    entries = list(cp.walk(fd, src, "", _none, _none))
    cp.hash_entries(fd, entries, hashlib.sha256())
    cp.write_entries(fd, str(image), cp.rebased(entries, "app"), cp.Owner(), None)
    assert (image / "app/sub/two.py").read_text() == "2"
    (root / "dir/sub/two.py").write_text("edited")
    with pytest.raises(InvalidState, match="dir/sub/two.py: the file changed while"):
        cp.write_entries(fd, str(image), cp.rebased(entries, "again"), cp.Owner(), None)


def test_add_extracts_only_the_archive_hashed_for_the_key(ctx, tmp_path):
    import io
    import tarfile

    from engine.build.sources import _extract

    root, fd = ctx

    def tar_of(data: bytes) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            ti = tarfile.TarInfo("f")
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        return buf.getvalue()

    (root / "a.tgz").write_bytes(tar_of(b"first"))
    digest = cp.file_digest(fd, "a.tgz")
    image = tmp_path / "image"
    image.mkdir()
    _extract(fd, "a.tgz", digest, str(image), "/x", "/")
    assert (image / "x/f").read_bytes() == b"first"
    (root / "a.tgz").write_bytes(tar_of(b"other"))
    with pytest.raises(InvalidState, match="a.tgz: the archive changed while"):
        _extract(fd, "a.tgz", digest, str(image), "/y", "/")
