"""Layer extraction's own tar reader (engine.images.layers.TarSource): tarfile's
header parser, the file data written straight from the stream. What it must
keep: sparse members, members it skips, truncated data refused, and the
reuse of a parent directory between entries never finding another directory
than a fresh lookup inside the root would."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from engine.errors import EngineError, InvalidArgument
from engine.images import layers

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod)"),
    pytest.mark.usefixtures("both_resolvers"),
]


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.linkname = kind, 0o755, 1_600_000_000, link
    if kind == tarfile.REGTYPE or kind not in tarfile.SUPPORTED_TYPES:
        ti.size = len(data)
    return ti, data


def make_tar(*entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def extract(data: bytes, dest: Path) -> int:
    dest.mkdir(exist_ok=True)
    return layers.extract_layer(io.BytesIO(data), dest)


@pytest.mark.skipif(not shutil.which("tar"), reason="GNU tar makes the sparse archives")
@pytest.mark.parametrize(
    "args",
    [
        ["--format=gnu"],
        ["--format=posix", "--sparse-version=0.0"],
        ["--format=posix", "--sparse-version=0.1"],
        ["--format=posix", "--sparse-version=1.0"],
    ],
)
def test_sparse_members_come_out_whole_with_holes(tmp_path, args):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(3_000_000)
        f.write(b"middle")
        f.seek(7_000_000)
        f.write(b"end")
    (src / "after").write_bytes(b"next member")
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", *args, "--sparse", "-cf", archive, "-C", src, "."], check=True)
    dest = tmp_path / "dest"
    extract(archive.read_bytes(), dest)
    assert (dest / "sparse").read_bytes() == (src / "sparse").read_bytes()
    assert (dest / "sparse").stat().st_blocks * 512 < 1_000_000  # holes, not zeros
    assert (dest / "after").read_bytes() == b"next member"


def test_members_not_extracted_are_skipped_whole(tmp_path):
    data = make_tar(
        entry("fifo", tarfile.FIFOTYPE),
        entry("odd", b"X", b"unknown type, with data" * 100),  # skipped like a device
        entry("dev", tarfile.CHRTYPE),
        entry("file", data=b"after them"),
    )
    dest = tmp_path / "dest"
    assert extract(data, dest) == len(b"after them")
    assert sorted(os.listdir(dest)) == ["file"]
    assert (dest / "file").read_bytes() == b"after them"


@pytest.mark.parametrize("cut", [600, 1000, 1536])
def test_truncated_member_data_is_refused(tmp_path, cut):
    data = make_tar(entry("big", data=os.urandom(5000)), entry("more", data=b"x"))
    with pytest.raises(InvalidArgument, match="malformed tar stream: unexpected end of data"):
        extract(data[:cut], tmp_path / "dest")


def sparse_tar(stored: bytes, size: int, offset: int, numbytes: int, *after) -> bytes:
    """A PAX tar whose member ``s`` stores ``stored`` under a one-run sparse map
    (``size``, ``offset``, ``numbytes``), followed by the ``after`` entries."""
    ti = tarfile.TarInfo("s")
    ti.size, ti.mtime = len(stored), 0
    ti.pax_headers = {
        "GNU.sparse.size": str(size),
        "GNU.sparse.numblocks": "1",
        "GNU.sparse.offset": str(offset),
        "GNU.sparse.numbytes": str(numbytes),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(ti, io.BytesIO(stored))
        for info, data in after:
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_sparse_map_beyond_the_file_is_refused(tmp_path):
    data = sparse_tar(b"0123456789", size=10, offset=8, numbytes=5)
    with pytest.raises(InvalidArgument, match="sparse map beyond"):
        extract(data, tmp_path / "dest")


def test_sparse_map_longer_than_the_stored_data_is_refused(tmp_path):
    # 4 bytes stored, a map of 2000: the runs would swallow the headers that
    # follow and the extraction would go on from the middle of another member.
    after = [entry(f"after{i}", data=b"next member " * 20) for i in range(4)]
    data = sparse_tar(b"abcd", 5000, 0, 2000, *after)
    with pytest.raises(InvalidArgument, match="sparse map of s covers 2000 bytes, 4 stored"):
        extract(data, tmp_path / "dest")


def test_parent_reused_only_while_a_fresh_lookup_finds_it(tmp_path):
    """``s`` -> ``p/q/..`` is ``p`` while ``p/q`` is a directory. Once an entry makes
    ``p/q`` a file, ``s/b`` must be looked up again (and fail, as it would have
    without the reuse), not created in ``p`` through the directory kept open."""
    data = make_tar(
        entry("p", tarfile.DIRTYPE),
        entry("p/q", tarfile.DIRTYPE),
        entry("s", tarfile.SYMTYPE, link="p/q/.."),
        entry("s/a", data=b"in p"),
        entry("s/q", data=b"p/q is a file now"),
        entry("s/b", data=b"must not land in p"),
    )
    dest = tmp_path / "dest"
    with pytest.raises(EngineError, match="s/b: Not a directory"):
        extract(data, dest)
    assert (dest / "p" / "a").read_bytes() == b"in p"
    assert (dest / "p" / "q").read_bytes() == b"p/q is a file now"
    assert not (dest / "p" / "b").exists()


def test_parent_reuse_follows_a_symlink_replacing_a_directory(tmp_path):
    data = make_tar(
        entry("d", tarfile.DIRTYPE),
        entry("other", tarfile.DIRTYPE),
        entry("d/x", data=b"1"),
        entry("d", tarfile.SYMTYPE, link="/other"),  # d's parent is the root: no reuse
        entry("d/y", data=b"2"),  # through the new link, inside the root
        entry("d/z", data=b"3"),  # the same parent again: reused
    )
    dest = tmp_path / "dest"
    extract(data, dest)
    assert (dest / "d").is_symlink()
    assert sorted(os.listdir(dest / "other")) == ["y", "z"]
    assert not any(tmp_path.glob("y")) and not any(Path("/other").glob("y"))
