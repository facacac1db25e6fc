"""Image store: references, busybox bootstrap, tags, rmi, queries, healing, concurrency."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from engine.errors import Conflict, HostNotReady, InvalidArgument, NotFound
from engine.images import reference as refs
from engine.images.bootstrap import bootstrap_busybox, is_static_elf
from engine.images.store import ImageStore

HAVE_BUSYBOX = Path("/bin/busybox").is_file() and is_static_elf(Path("/bin/busybox"))
needs_busybox = pytest.mark.skipif(not HAVE_BUSYBOX, reason="needs busybox-static")


def make_tar(files: dict[str, bytes | None], mtime: int = 1_700_000_000) -> bytes:
    """A layer tar: name -> content (None for a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def new_store(root: Path) -> ImageStore:
    return ImageStore(root / "images", root / "locks")


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return new_store(tmp_path)


def small_image(store: ImageStore, tag: str | None = None, label: str = "x", **config):
    cfg = {"config": {"Labels": {"which": label}}, **config}
    return store.add_image([make_tar({f"{label}.txt": label.encode()})], cfg, [tag] if tag else [])


# -- references ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, full, fam",
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
        ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("quay.io/x/y", "quay.io/x/y:latest", "quay.io/x/y:latest"),
        ("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000"),
    ],
)
def test_reference_normalisation(text, full, fam):
    ref = refs.parse_reference(text)
    assert str(ref) == full
    assert ref.familiar() == fam


def test_reference_digest_and_display():
    digest = "sha256:" + "a" * 64
    ref = refs.parse_reference(f"busybox@{digest}")
    assert ref.tag is None and ref.digest == digest
    assert str(ref) == f"docker.io/library/busybox@{digest}"
    assert ref.familiar() == f"busybox@{digest}"
    assert refs.familiar("docker.io/library/busybox") == "busybox"
    assert refs.parse_reference("busybox").familiar_name == "busybox"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Busybox",
        "busybox:",
        "busybox:bad tag",
        "a" * 64,
        "busybox@sha256:abc",
        "-x",
        "a//b",
        " x",
    ],
)
def test_reference_invalid(bad):
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        refs.parse_reference(bad)


def test_reference_match_pattern():
    ref = refs.parse_reference("localhost:5000/team/app:v1")
    assert refs.match_pattern("localhost:5000/team/*", ref)
    assert not refs.match_pattern("localhost:5000/*", ref)  # * does not cross /
    assert refs.match_pattern("*/team/app:v?", ref)
    assert refs.match_pattern("busy*", refs.parse_reference("busybox"))


# -- bootstrap ----------------------------------------------------------------------------


@needs_busybox
def test_bootstrap_busybox(store: ImageStore):
    rec = bootstrap_busybox(store)
    assert rec.repo_tags == ("busybox:latest",)
    assert rec.config["config"]["Cmd"] == ["sh"]
    assert (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        in rec.config["config"]["Env"]
    )
    (diff,) = store.layer_dirs(rec)
    assert (diff / "bin" / "busybox").is_file()
    assert os.readlink(diff / "bin" / "sh") == "busybox"
    assert (diff / "bin" / "ip").is_symlink()  # an sbin applet, in /bin too
    passwd = (diff / "etc" / "passwd").read_text()
    assert (
        "root:x:0:0:" in passwd and "daemon:x:1:1:" in passwd and "nobody:x:65534:65534:" in passwd
    )
    assert "nogroup:x:65534:" in (diff / "etc" / "group").read_text()
    assert stat.S_IMODE((diff / "tmp").stat().st_mode) == 0o1777
    for d in ("root", "home", "var", "dev", "proc", "sys"):
        assert (diff / d).is_dir()
    assert rec.size > 500_000

    # Idempotent and unpacked once: same ID, same layer directory untouched.
    inode = (diff / "bin" / "busybox").stat().st_ino
    again = bootstrap_busybox(store, "busybox:again")
    assert again.id == rec.id
    assert set(again.repo_tags) == {"busybox:latest", "busybox:again"}
    assert store.layer_dirs(again) == [diff]
    assert (diff / "bin" / "busybox").stat().st_ino == inode
    assert len(list((store.root / "layers").iterdir())) == 1


@needs_busybox
def test_bootstrap_is_reproducible_across_stores(tmp_path: Path):
    a = bootstrap_busybox(new_store(tmp_path / "a"))
    b = bootstrap_busybox(new_store(tmp_path / "b"))
    assert a.id == b.id and a.manifest_digest == b.manifest_digest


def test_bootstrap_refuses_dynamic_busybox(store: ImageStore, tmp_path: Path):
    with pytest.raises(HostNotReady, match="busybox-static"):
        bootstrap_busybox(store, busybox=tmp_path / "missing")
    # The venv's python is a dynamically linked ELF.
    dynamic = Path(os.path.realpath("/bin/ls"))
    assert not is_static_elf(dynamic)
    with pytest.raises(HostNotReady, match="not a static"):
        bootstrap_busybox(store, busybox=dynamic)


# -- layers ---------------------------------------------------------------------------------


def test_layers_shared_by_chain_id_and_ordered(store: ImageStore):
    base = make_tar({"etc/": None, "etc/base": b"base"})
    a = store.add_image([base, make_tar({"a": b"A"})], {}, ["a"])
    b = store.add_image([base, make_tar({"b": b"B"})], {}, ["b"])
    assert a.chain_ids[0] == b.chain_ids[0] and a.chain_ids[1] != b.chain_ids[1]
    da, db = store.layer_dirs(a), store.layer_dirs(b)
    assert da[0] == db[0]  # lowest first, shared
    assert (da[0] / "etc" / "base").read_bytes() == b"base"
    assert (da[1] / "a").read_bytes() == b"A"
    assert len(list((store.root / "layers").iterdir())) == 3


def test_gzip_layer_input_and_whiteouts(store: ImageStore):
    import gzip

    lower = make_tar({"keep": b"k", "gone": b"g"})
    upper = gzip.compress(make_tar({".wh.gone": b""}))
    rec = store.add_image([lower, upper], {}, ["wh"])
    top = store.layer_dirs(rec)[1]
    st = os.lstat(top / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    # Stored uncompressed: the blob digest is the diff ID.
    assert rec.layer_digests == rec.diff_ids


def test_interrupted_unpack_heals(store: ImageStore):
    layer = make_tar({"f": b"hello"})
    rec = store.add_image([layer], {}, ["x"])
    chain = rec.chain_ids[0][7:]
    layers_dir = store.root / "layers"
    # Simulate a crash mid-unpack: the final dir is gone, a temp dir is left,
    # and (worse) a final dir without meta.json from some older, broken run.
    os.rename(layers_dir / chain, layers_dir / f"{chain}.tmp-deadbeef")
    (layers_dir / f"{chain}.tmp-deadbeef" / "meta.json").unlink()
    (layers_dir / chain / "diff").mkdir(parents=True)
    (layers_dir / chain / "diff" / "partial").write_bytes(b"junk")

    (diff,) = store.layer_dirs(store.get("x"))
    assert (diff / "f").read_bytes() == b"hello"
    assert not (diff / "partial").exists()
    assert sorted(p.name for p in layers_dir.iterdir()) == [chain]
    # And adding the same layer again reuses it.
    again = store.add_image([layer], {"config": {"Cmd": ["x"]}}, ["y"])
    assert store.layer_dirs(again) == [diff]


def test_tampered_layer_blob_refused_on_unpack(store: ImageStore):
    rec = store.add_image([make_tar({"f": b"1"})], {}, ["x"])
    blob = store.blobs.path(rec.layer_digests[0])
    store.layers.remove(rec.chain_ids[0])
    blob.write_bytes(make_tar({"f": b"2"}))
    with pytest.raises(InvalidArgument, match=rec.diff_ids[0]):
        store.layer_dirs(rec)


# -- lookup and tags ------------------------------------------------------------------------


def test_get_by_name_id_and_prefix(store: ImageStore):
    rec = small_image(store, "app:1")
    assert store.get("app:1").id == rec.id
    assert store.get("docker.io/library/app:1").id == rec.id
    assert store.get(rec.id).id == rec.id
    assert store.get(rec.id[7:]).id == rec.id
    assert store.get(rec.short_id).id == rec.id
    assert store.get(f"app@{rec.manifest_digest}").id == rec.id
    with pytest.raises(NotFound, match="No such image: app:2"):
        store.get("app:2")
    with pytest.raises(NotFound, match="No such image: app"):
        store.get("app")  # app:latest does not exist
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        store.get("App:1")


def test_ambiguous_prefix(store: ImageStore):
    ids = [small_image(store, label=f"l{i}").id for i in range(17)]
    by_first: dict[str, list[str]] = {}
    for i in ids:
        by_first.setdefault(i[7], []).append(i)
    shared = next(c for c, v in by_first.items() if len(v) > 1)  # pigeonhole: 17 > 16
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.get(shared)


def test_tag_untag_and_moving_tags(store: ImageStore):
    a = small_image(store, "app:1", label="a")
    store.tag("app:1", "localhost:5000/team/app:v1")
    assert set(store.get(a.id).repo_tags) == {"app:1", "localhost:5000/team/app:v1"}
    b = small_image(store, "app:1", label="b")  # the tag moves to the new image
    assert store.get("app:1").id == b.id
    assert store.get(a.id).repo_tags == ("localhost:5000/team/app:v1",)
    store.untag("localhost:5000/team/app:v1")
    assert store.get(a.id).dangling
    with pytest.raises(NotFound):
        store.untag("localhost:5000/team/app:v1")
    with pytest.raises(InvalidArgument):
        store.tag("app:1", "bad name")
    with pytest.raises(InvalidArgument, match="digest"):
        store.tag("app:1", "app@sha256:" + "0" * 64)


# -- rmi ------------------------------------------------------------------------------------


def test_rmi_one_of_several_tags_untags_only(store: ImageStore):
    rec = small_image(store, "app:1")
    store.tag("app:1", "app:2")
    assert store.remove("app:2") == ["Untagged: app:2"]
    assert store.get(rec.id).repo_tags == ("app:1",)
    lines = store.remove("app:1")
    assert lines[:2] == ["Untagged: app:1", f"Deleted: {rec.id}"]
    assert f"Deleted: {rec.chain_ids[0]}" in lines
    with pytest.raises(NotFound):
        store.get(rec.id)
    assert not any(store.blobs.digests())
    assert not list((store.root / "layers").iterdir())


def test_rmi_by_id_with_several_repositories_needs_force(store: ImageStore):
    rec = small_image(store, "app:1")
    store.tag("app:1", "other:1")
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        store.remove(rec.short_id)
    lines = store.remove(rec.short_id, force=True)
    assert sorted(lines[:2]) == ["Untagged: app:1", "Untagged: other:1"]
    assert f"Deleted: {rec.id}" in lines


def test_rmi_by_id_single_repository_untags_all(store: ImageStore):
    rec = small_image(store, "app:1")
    store.tag("app:1", "app:2")  # same repository: no force needed
    lines = store.remove(rec.id)
    assert sorted(lines[:2]) == ["Untagged: app:1", "Untagged: app:2"]


def test_rmi_in_use_refused_then_forced(store: ImageStore):
    rec = small_image(store, "app:1")
    users = {rec.id: ["web1"]}

    def in_use(image_id: str) -> list[str]:
        return users.get(image_id, [])

    with pytest.raises(Conflict, match="container web1 is using"):
        store.remove("app:1", in_use=in_use)
    with pytest.raises(Conflict, match="being used by container web1"):
        store.remove(rec.id, in_use=in_use)
    assert store.get("app:1").id == rec.id

    lines = store.remove("app:1", force=True, in_use=in_use)
    assert lines == ["Untagged: app:1", f"Deleted: {rec.id}"]
    with pytest.raises(NotFound):
        store.get(rec.id)
    assert rec.id not in [r.id for r in store.list(all=True)]
    # The container can still find its image and layers.
    hidden = store.get_by_id(rec.id)
    assert hidden.removed
    (diff,) = store.layer_dirs(hidden)
    assert diff.is_dir()
    store.gc(in_use)  # still used: kept
    assert diff.is_dir()
    users.clear()
    report = store.gc(in_use)
    assert rec.chain_ids[0] in report.layers_removed
    assert not diff.exists()
    with pytest.raises(NotFound):
        store.get_by_id(rec.id)


def test_rmi_keeps_shared_layers(store: ImageStore):
    base = make_tar({"base": b"b"})
    a = store.add_image([base, make_tar({"a": b"a"})], {}, ["a"])
    b = store.add_image([base], {}, ["b"])
    store.remove("a")
    (diff,) = store.layer_dirs(store.get("b"))
    assert (diff / "base").is_file()
    assert not store.layers.path(a.chain_ids[1]).exists()
    assert store.blobs.has(b.layer_digests[0])


def test_rmi_parent_with_children_refused(store: ImageStore):
    parent = small_image(store, label="p")
    store.add_image([make_tar({"c": b"c"})], {}, ["child"], parent=parent.id)
    with pytest.raises(Conflict, match="dependent child images"):
        store.remove(parent.id, force=True)
    assert parent.id not in [r.id for r in store.list()]  # intermediate hidden
    assert parent.id in [r.id for r in store.list(all=True)]


# -- list, history, inspect, sizes --------------------------------------------------------


def test_list_filters(store: ImageStore):
    a = small_image(store, "app:1", label="a", created="2024-01-01T00:00:00Z")
    b = small_image(store, "localhost:5000/team/tool:2", label="b", created="2024-02-01T00:00:00Z")
    c = small_image(store, None, label="c", created="2024-03-01T00:00:00.123456789Z")

    def ids(**filters):
        return [r.id for r in store.list(filters=filters)]

    assert ids() == [c.id, b.id, a.id]  # newest first
    assert ids(dangling="true") == [c.id]
    assert ids(dangling="false") == [b.id, a.id]
    assert ids(reference="app") == [a.id]
    assert ids(reference="app:*") == [a.id]
    assert ids(reference=["localhost:5000/team/*", "app"]) == [b.id, a.id]
    assert ids(label="which") == [c.id, b.id, a.id]
    assert ids(label="which=b") == [b.id]
    assert ids(label=["which=b", "nope"]) == []
    assert ids(before="localhost:5000/team/tool:2") == [a.id]
    assert ids(since="app:1") == [c.id, b.id]
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        store.list(filters={"colour": "red"})
    with pytest.raises(InvalidArgument):
        store.list(filters={"dangling": "maybe"})


def test_history_sizes(store: ImageStore):
    l1 = make_tar({"one": b"x" * 1000})
    l2 = make_tar({"d/": None, "d/two": b"y" * 2345})
    history = [
        {"created": "2024-01-01T00:00:00Z", "created_by": "ADD one /", "comment": "first"},
        {"created": "2024-01-01T00:00:01Z", "created_by": "ENV A=1", "empty_layer": True},
        {"created": "2024-01-01T00:00:02Z", "created_by": "RUN make two"},
    ]
    rec = store.add_image([l1, l2], {"history": history, "created": "2024-01-01T00:00:02Z"}, ["h"])
    rows = store.history("h")
    assert [r.created_by for r in rows] == ["RUN make two", "ENV A=1", "ADD one /"]
    assert [r.size for r in rows] == [2345, 0, 1000]
    assert rows[0].id == rec.id and rows[0].tags == ("h:latest",)
    assert rows[1].id == "<missing>" and rows[2].comment == "first"
    assert rec.size == 3345


def test_inspect_fields(store: ImageStore):
    rec = small_image(store, "app:1", author="me")
    info = store.inspect("app:1")
    for key in (
        "Id",
        "RepoTags",
        "RepoDigests",
        "Created",
        "Size",
        "Config",
        "RootFS",
        "Architecture",
        "Os",
        "Author",
    ):
        assert key in info
    assert info["Id"] == rec.id and info["RepoTags"] == ["app:1"] and info["Author"] == "me"
    assert info["RootFS"] == {"Type": "layers", "Layers": list(rec.diff_ids)}
    assert info["Config"]["Labels"] == {"which": "x"} and info["Config"]["Cmd"] is None
    assert info["Os"] == "linux" and info["Size"] == rec.size


def test_sizes_shared_and_unique(store: ImageStore):
    base = make_tar({"base": b"b" * 4000})
    a = store.add_image([base, make_tar({"a": b"a" * 100})], {}, ["a"])
    b = store.add_image([base, make_tar({"b": b"b" * 300})], {}, ["b"])
    c = store.add_image([make_tar({"c": b"c" * 50})], {}, ["c"])
    usage = {u.id: u for u in store.sizes(in_use=lambda i: ["x"] if i == a.id else [])}
    assert (usage[a.id].size, usage[a.id].shared_size, usage[a.id].unique_size) == (4100, 4000, 100)
    assert (usage[b.id].shared_size, usage[b.id].unique_size) == (4000, 300)
    assert (usage[c.id].shared_size, usage[c.id].unique_size) == (0, 50)
    assert usage[a.id].containers == 1 and usage[b.id].containers == 0


# -- concurrency ----------------------------------------------------------------------------


def _add_many(root: str, prefix: str, n: int) -> None:
    store = new_store(Path(root))
    for i in range(n):
        store.add_image(
            [make_tar({f"{prefix}{i}": prefix.encode()})],
            {"config": {"Labels": {"i": f"{prefix}{i}"}}},
            [f"{prefix}:{i}", "shared:tag"],
        )


def test_concurrent_processes_do_not_lose_tags(tmp_path: Path):
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_add_many, args=(str(tmp_path), p, 12)) for p in ("one", "two", "three")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = new_store(tmp_path)
    json.loads(store.index_path.read_text())  # never half-written
    tags = {t for r in store.list() for t in r.repo_tags}
    for p in ("one", "two", "three"):
        assert {f"{p}:{i}" for i in range(12)} <= tags
    assert "shared:latest" not in tags and "shared:tag" in tags
    assert len(store.list()) == 36


def test_concurrent_threads_same_layer(tmp_path: Path):
    store = new_store(tmp_path)
    layer = make_tar({"big": os.urandom(1 << 20)})
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            store.add_image([layer], {"config": {"Cmd": [str(i)]}}, [f"t:{i}"])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store.list()) == 6
    assert len(list((store.root / "layers").iterdir())) == 1
