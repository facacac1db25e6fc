"""engine.images.layers: hostile tars stay inside the destination; whiteouts both ways."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from engine import safepath
from engine.errors import Conflict, InvalidArgument, NotFound
from engine.images import layers

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod, trusted.*)"),
    pytest.mark.usefixtures("both_resolvers"),
]


def make_tar(*entries: tuple, gz: bool = False) -> io.BytesIO:
    """entries: (name, kind, data_or_linkname, extra attrs) with kind 'f','d','l','h','c','b','p'."""
    kinds = {
        "f": tarfile.REGTYPE,
        "d": tarfile.DIRTYPE,
        "l": tarfile.SYMTYPE,
        "h": tarfile.LNKTYPE,
        "c": tarfile.CHRTYPE,
        "b": tarfile.BLKTYPE,
        "p": tarfile.FIFOTYPE,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            name, kind, payload, extra = (*entry, None, None, None)[:4]
            ti = tarfile.TarInfo(name)
            ti.type = kinds[kind]
            ti.mode = 0o755 if kind == "d" else 0o644
            ti.mtime = 1_600_000_000
            data = b""
            if kind == "f":
                data = payload or b""
                ti.size = len(data)
            elif kind in "lh":
                ti.linkname = payload
            elif kind in "cb":
                ti.devmajor, ti.devminor = 8, 0
            for k, v in (extra or {}).items():
                setattr(ti, k, v)
            tar.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    return io.BytesIO(gzip.compress(raw, mtime=0) if gz else raw)


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return list(tar)


def snapshot(top: Path, root: Path) -> dict[str, object]:
    seen: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == root:
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            if p == root:
                continue
            st = p.lstat()
            seen[str(p)] = (st.st_mode, st.st_nlink, p.read_bytes() if p.is_file() else None)
    return seen


@pytest.fixture
def env(tmp_path: Path):
    """An empty root and a host dir beside it whose sentinel must survive untouched."""
    root = tmp_path / "root"
    host = tmp_path / "host"
    root.mkdir()
    host.mkdir()
    (host / "sentinel").write_bytes(b"HOST")
    before = snapshot(tmp_path, root)
    yield root, host
    assert snapshot(tmp_path, root) == before, "something outside the root changed"


def in_root(root: Path, host_path: Path) -> Path:
    return root / str(host_path).lstrip("/")


def test_names_with_dotdot_and_absolute_are_cleaned_into_root(env) -> None:
    root, host = env
    n = layers.extract_layer(
        make_tar(
            ("../../evil", "f", b"1"),
            ("/etc/passwd", "f", b"root:x:0:0\n"),
            ("a/../../../b/c", "f", b"22"),
            (f"{host}/sentinel", "f", b"PWNED"),
        ),
        root,
    )
    assert n == 1 + 11 + 2 + 5
    assert (root / "evil").read_bytes() == b"1"
    assert (root / "etc/passwd").read_bytes() == b"root:x:0:0\n"
    assert (root / "b/c").read_bytes() == b"22"
    assert in_root(root, host / "sentinel").read_bytes() == b"PWNED"


def test_write_through_symlink_entries_stays_in_root(env) -> None:
    root, host = env
    layers.extract_layer(
        make_tar(
            ("a", "l", "/"),
            ("a/etc/evil", "f", b"e"),
            ("up", "l", "../../../../.."),
            ("up/evil2", "f", b"e2"),
            ("mirror", "d"),
            ("h", "l", str(host)),
            (str(host).lstrip("/"), "d"),  # make the link's target exist *in the root*
            ("h/sentinel", "f", b"PWNED"),
        ),
        root,
    )
    assert os.readlink(root / "a") == "/"  # link targets are data, stored verbatim
    assert (root / "etc/evil").read_bytes() == b"e"
    assert (root / "evil2").read_bytes() == b"e2"
    assert in_root(root, host / "sentinel").read_bytes() == b"PWNED"


def test_dangling_symlink_parent_is_refused(env) -> None:
    root, host = env
    with pytest.raises(NotFound):
        layers.extract_layer(make_tar(("h", "l", str(host)), ("h/sentinel", "f", b"X")), root)


def test_file_replaces_a_symlink_instead_of_writing_through(env) -> None:
    root, host = env
    (root / "x").write_bytes(b"old")
    layers.extract_layer(make_tar(("link", "l", "/x"), ("link", "f", b"new")), root)
    assert (root / "x").read_bytes() == b"old"
    assert not (root / "link").is_symlink()
    assert (root / "link").read_bytes() == b"new"


def test_hardlinks_only_to_files_inside(env) -> None:
    root, host = env
    for target in ("/etc/shadow", "../../../etc/shadow", str(host / "sentinel")):
        with pytest.raises(InvalidArgument):
            layers.extract_layer(make_tar(("x", "h", target)), root)
    # Through a symlinked parent pointing at the host: resolved in the root.
    with pytest.raises(InvalidArgument):
        layers.extract_layer(make_tar(("hl", "l", str(host)), ("y", "h", "hl/sentinel")), root)
    with pytest.raises(InvalidArgument):  # a directory
        layers.extract_layer(make_tar(("d", "d"), ("z", "h", "d")), root)
    layers.extract_layer(
        make_tar(("etc/shadow", "f", b"s"), ("x", "h", "/etc/shadow"), ("y", "h", "../etc/shadow")),
        root,
    )
    assert (root / "x").stat().st_ino == (root / "etc/shadow").stat().st_ino
    assert (root / "etc/shadow").stat().st_nlink == 3
    assert (host / "sentinel").stat().st_nlink == 1


def test_hardlink_to_a_symlink_links_the_symlink(env) -> None:
    root, host = env
    layers.extract_layer(make_tar(("l", "l", str(host / "sentinel")), ("h", "h", "l")), root)
    assert os.readlink(root / "h") == str(host / "sentinel")


def test_device_nodes_and_fifos_are_skipped(env) -> None:
    root, _ = env
    whiteout_lookalike = ("null", "c", None, {"devmajor": 0, "devminor": 0})
    layers.extract_layer(
        make_tar(("sda", "b"), ("mem", "c"), whiteout_lookalike, ("pipe", "p"), ("ok", "f", b"k")),
        root,
    )
    assert sorted(os.listdir(root)) == ["ok"]


def test_whiteouts_become_overlay_whiteouts(env) -> None:
    root, _ = env
    layers.extract_layer(
        make_tar(
            ("etc", "d"),
            ("etc/.wh.gone", "f"),
            ("etc/.wh..wh..opq", "f"),
            ("var/lib/.wh..wh..opq", "f"),  # parents created on demand
            (".wh..wh.plnk", "d"),  # AUFS metadata: ignored
            ("etc/.wh..", "f"),  # would whiteout the root: ignored
            ("etc/.wh...", "f"),
        ),
        root,
    )
    st = os.lstat(root / "etc/gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(root / "etc", layers.OPAQUE_XATTR) == b"y"
    assert os.getxattr(root / "var/lib", layers.OPAQUE_XATTR) == b"y"
    assert sorted(os.listdir(root)) == ["etc", "var"]
    assert sorted(os.listdir(root / "etc")) == ["gone"]


def test_copy_in_keeps_whiteout_names_as_files(env) -> None:
    root, _ = env
    layers.copy_in(root, "/", make_tar(("d/.wh.x", "f", b"w"), ("d/.wh..wh..opq", "f")))
    assert (root / "d/.wh.x").read_bytes() == b"w"
    assert "trusted.overlay.opaque" not in os.listxattr(root / "d")


def test_metadata_is_preserved(env) -> None:
    root, _ = env
    pax = {
        "SCHILY.xattr.user.note": "hello",
        "SCHILY.xattr.trusted.overlay.redirect": "/elsewhere",  # never from a tar
    }
    layers.extract_layer(
        make_tar(
            ("bin", "d", None, {"mode": 0o711, "uid": 3, "gid": 4, "mtime": 1234}),
            ("bin/su", "f", b"x", {"mode": 0o4755, "uid": 0, "gid": 0, "mtime": 99}),
            ("bin/t", "f", b"y", {"uid": 1000, "gid": 1000, "pax_headers": pax}),
            ("bin/l", "l", "su", {"uid": 5, "gid": 6}),
        ),
        root,
    )
    st = os.lstat(root / "bin")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o711, 3, 4, 1234)
    st = os.lstat(root / "bin/su")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o4755, 99)
    st = os.lstat(root / "bin/t")
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert os.getxattr(root / "bin/t", "user.note") == b"hello"
    assert "trusted.overlay.redirect" not in os.listxattr(root / "bin/t")
    st = os.lstat(root / "bin/l")
    assert (st.st_uid, st.st_gid) == (5, 6)


def test_gzip_and_corrupt_streams(env) -> None:
    root, _ = env
    assert layers.extract_layer(make_tar(("f", "f", b"abc"), gz=True), root) == 3
    raw = make_tar(("g", "f", os.urandom(5000))).getvalue()
    with pytest.raises(InvalidArgument):
        layers.extract_layer(io.BytesIO(raw), root / "f")  # not a directory
    for broken in (raw[:2000], gzip.compress(raw)[:3000], b"garbage" * 100):
        (root / "sub").mkdir()
        with pytest.raises(InvalidArgument):
            layers.extract_layer(io.BytesIO(broken), root / "sub")
        shutil.rmtree(root / "sub")


def test_huge_extended_header_is_refused_without_reading_it(env) -> None:
    """A pax header of 64 MiB (zeros: a few KB once gzipped) is refused by its size; a
    normal long name (pax too) still unpacks."""
    import resource

    root, _ = env
    long_name = "d/" + "/".join(["n" * 60] * 4)  # > 100 bytes: needs a long-name header
    assert layers.extract_layer(make_tar((long_name, "f", b"ok"), gz=True), root) == 2
    assert (root / long_name).read_bytes() == b"ok"
    size = 64 << 20
    body = b"0" * size
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, size
    raw = header.tobuf(format=tarfile.USTAR_FORMAT) + body + b"\0" * (-size % 512)
    bomb = gzip.compress(raw + b"\0" * 1024, compresslevel=1)
    del body, raw
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (root / "bomb").mkdir()
    with pytest.raises(InvalidArgument, match="extended header of 67108864 bytes"):
        layers.extract_layer(io.BytesIO(bomb), root / "bomb")
    # Not read into memory (the peak grew by far less than the header's size).
    grew_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grew_kb < 32 * 1024, grew_kb


@pytest.mark.skipif(not shutil.which("zstd"), reason="no zstd binary")
def test_zstd_layer(env) -> None:
    root, _ = env
    raw = make_tar(("z/f", "f", b"zz")).getvalue()
    comp = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    assert layers.extract_layer(io.BytesIO(comp), root) == 2
    assert (root / "z/f").read_bytes() == b"zz"
    (root / "bad").mkdir()
    with pytest.raises(InvalidArgument):
        layers.extract_layer(io.BytesIO(comp[:-8]), root / "bad")


def test_diff_to_tar_converts_whiteouts_and_hardlinks(env) -> None:
    root, _ = env
    up = root
    (up / "etc").mkdir()
    os.setxattr(up / "etc", layers.OPAQUE_XATTR, b"y")
    os.setxattr(up / "etc", "trusted.overlay.origin", b"junk")
    (up / "etc/a").write_bytes(b"A")
    os.link(up / "etc/a", up / "z-link")
    os.mknod(up / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.symlink("/etc/a", up / "sym")
    out = io.BytesIO()
    layers.diff_to_tar(up, out)
    got = [(m.name, m.type, m.linkname) for m in members(out.getvalue())]
    assert got == [
        ("etc", tarfile.DIRTYPE, ""),
        ("etc/.wh..wh..opq", tarfile.REGTYPE, ""),
        ("etc/a", tarfile.REGTYPE, ""),
        (".wh.gone", tarfile.REGTYPE, ""),
        ("sym", tarfile.SYMTYPE, "/etc/a"),
        ("z-link", tarfile.LNKTYPE, "etc/a"),
    ]
    etc = members(out.getvalue())[0]
    assert not any("overlay" in k for k in etc.pax_headers)
    again = io.BytesIO()
    layers.diff_to_tar(up, again)
    assert again.getvalue() == out.getvalue()  # deterministic


def test_layer_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    src = make_tar(
        ("d", "d"),
        ("d/.wh..wh..opq", "f"),
        ("d/f", "f", b"data", {"mode": 0o2750, "uid": 7, "gid": 8}),
        ("d/.wh.old", "f"),
        ("d/h", "h", "d/f"),
        ("s", "l", "d/f"),
    )
    layers.extract_layer(src, root)
    first = io.BytesIO()
    layers.diff_to_tar(root, first)
    again = tmp_path / "again"
    again.mkdir()
    layers.extract_layer(io.BytesIO(first.getvalue()), again)
    second = io.BytesIO()
    layers.diff_to_tar(again, second)
    assert first.getvalue() == second.getvalue()
    names = [m.name for m in members(first.getvalue())]
    assert names == ["d", "d/.wh..wh..opq", "d/f", "d/h", "d/.wh.old", "s"]


def test_tar_dir_is_plain_and_handles_deep_trees(env) -> None:
    root, _ = env
    depth = 1200  # deeper than Python's recursion limit
    safepath.mkdirs_in_root(root, "/".join(["d"] * depth))
    os.mknod(root / "wh", stat.S_IFCHR, os.makedev(0, 0))
    out = io.BytesIO()
    try:
        layers.tar_dir(root, out, mtime=5)
    finally:
        # Bottom-up by hand: pytest's own (recursive) rmtree of old tmp dirs would choke.
        for i in range(depth, 0, -1):
            os.rmdir(root / "/".join(["d"] * i))
    ms = members(out.getvalue())
    assert ms[-1].name == "wh" and ms[-1].ischr()  # no whiteout conversion
    assert len(ms) == 1201 and all(m.mtime <= 5 for m in ms)
    assert "." not in [m.name for m in ms]


def test_copy_out_symlink_pointing_outside(env) -> None:
    root, host = env
    os.symlink(host / "sentinel", root / "leak")
    os.symlink(host, root / "dirleak")
    out = io.BytesIO()
    layers.copy_out(root, "/leak", out)
    (m,) = members(out.getvalue())
    assert (m.name, m.issym(), m.linkname) == ("leak", True, str(host / "sentinel"))
    with pytest.raises(NotFound):  # followed, it resolves inside the root: missing there
        layers.copy_out(root, "/leak", io.BytesIO(), follow_link=True)
    with pytest.raises(NotFound):
        layers.copy_out(root, "dirleak/sentinel", io.BytesIO())
    mirror = in_root(root, host)
    mirror.mkdir(parents=True)
    (mirror / "sentinel").write_bytes(b"inside")
    for path, kw in (("leak", {"follow_link": True}), ("dirleak/sentinel", {})):
        out = io.BytesIO()
        layers.copy_out(root, path, out, **kw)
        (m,) = members(out.getvalue())
        with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
            assert (m.name, tar.extractfile(m.name).read()) == (
                "sentinel" if "/" in path else "leak",
                b"inside",
            )


def test_copy_out_directory_and_contents(env) -> None:
    root, _ = env
    safepath.write_file_in_root(root, "etc/app/conf", b"c")
    out = io.BytesIO()
    layers.copy_out(root, "etc/app", out)
    assert [m.name for m in members(out.getvalue())] == ["app", "app/conf"]
    out = io.BytesIO()
    layers.copy_out(root, "etc/app/.", out)
    assert [m.name for m in members(out.getvalue())] == ["conf"]


def test_copy_in_hostile_tar(env) -> None:
    root, host = env
    (root / "tmp").mkdir()
    os.symlink(host, root / "tmp/planted")  # planted by the container, dangling in root
    os.symlink("/", root / "tmp/toroot")
    layers.copy_in(
        root,
        "/tmp",
        make_tar(
            ("../../../evil", "f", b"1"),
            ("/abs", "f", b"2"),
            ("a", "l", "/"),
            ("a/etc/evil", "f", b"3"),
            ("toroot/x", "f", b"4"),
            ("dev", "c"),
            ("owned", "f", b"5", {"uid": 1234, "gid": 1234}),
        ),
    )
    assert (root / "tmp/evil").read_bytes() == b"1"
    assert (root / "tmp/abs").read_bytes() == b"2"
    assert (root / "etc/evil").read_bytes() == b"3"
    assert (root / "x").read_bytes() == b"4"
    assert not (root / "tmp/dev").exists()
    assert (root / "tmp/owned").stat().st_uid == 0  # like docker cp without --archive
    with pytest.raises(NotFound):
        layers.copy_in(root, "/tmp", make_tar(("planted/sentinel", "f", b"X")))
    with pytest.raises(NotFound):
        layers.copy_in(root, "/tmp/planted", make_tar(("sentinel", "f", b"X")))
    with pytest.raises(Conflict):
        layers.copy_in(root, "/", make_tar(("tmp", "f", b"X")))
    layers.copy_in(root, "/tmp", make_tar(("kept", "f", b"k", {"uid": 9})), preserve_owner=True)
    assert (root / "tmp/kept").stat().st_uid == 9
