"""import / load / save: docker save archives (old and Docker 25 forms), OCI layouts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.images import archive
from engine.images.bootstrap import bootstrap_busybox, is_static_elf
from engine.images.store import ImageStore

HAVE_BUSYBOX = Path("/bin/busybox").is_file() and is_static_elf(Path("/bin/busybox"))


def make_tar(files: dict[str, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def new_store(root: Path) -> ImageStore:
    return ImageStore(root / "images", root / "locks")


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def rebuild(files: dict[str, bytes]) -> bytes:
    return make_tar(files)


@pytest.fixture
def image(tmp_path: Path):
    store = new_store(tmp_path / "src")
    base = make_tar({"etc/": None, "etc/os-release": b"ID=test\n"})
    rec = store.add_image(
        [base, gzip.compress(make_tar({"app": b"#!/bin/sh\necho hi\n"}))],
        {"config": {"Cmd": ["/app"], "Labels": {"a": "b"}}},
        ["app:1", "app:2"],
    )
    return store, rec


# -- save / load round trip ---------------------------------------------------------------


def test_save_layout_is_docker25(image):
    store, rec = image
    out = io.BytesIO()
    archive.save(store, ["app:1"], out)
    files = members(out.getvalue())
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for digest in (rec.id, rec.manifest_digest, *rec.layer_digests):
        assert f"blobs/sha256/{digest[7:]}" in files
    (entry,) = json.loads(files["manifest.json"])
    assert entry["Config"] == f"blobs/sha256/{rec.id[7:]}"
    assert entry["RepoTags"] == ["app:1"]
    assert entry["Layers"] == [f"blobs/sha256/{d[7:]}" for d in rec.layer_digests]
    index = json.loads(files["index.json"])
    (desc,) = index["manifests"]
    assert desc["digest"] == rec.manifest_digest
    assert desc["annotations"]["io.containerd.image.name"] == "docker.io/library/app:1"
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "1"
    assert json.loads(files["repositories"]) == {"app": {"1": rec.layer_digests[-1][7:]}}


def test_save_load_round_trip(image, tmp_path: Path):
    store, rec = image
    out = io.BytesIO()
    archive.save(store, ["app"], out)  # a repository: all its tags
    other = new_store(tmp_path / "dst")
    loaded = archive.load(other, io.BytesIO(out.getvalue()))
    assert sorted(loaded) == ["app:1", "app:2"]
    got = other.get("app:2")
    assert got.id == rec.id and got.manifest_digest == rec.manifest_digest
    assert (other.layer_dirs(got)[1] / "app").read_bytes().startswith(b"#!/bin/sh")
    # Loading again is harmless and gives the same image.
    assert archive.load(other, io.BytesIO(out.getvalue())) == loaded
    assert len(other.list()) == 1


def test_save_gzip_load_and_by_id(image, tmp_path: Path):
    store, rec = image
    out = io.BytesIO()
    archive.save(store, [rec.short_id], out)
    assert json.loads(members(out.getvalue())["manifest.json"])[0]["RepoTags"] is None
    other = new_store(tmp_path / "dst")
    assert archive.load(other, io.BytesIO(gzip.compress(out.getvalue()))) == [rec.id]
    assert other.get(rec.id).dangling


@pytest.mark.skipif(not HAVE_BUSYBOX, reason="needs busybox-static")
def test_busybox_round_trip(tmp_path: Path):
    src = new_store(tmp_path / "a")
    rec = bootstrap_busybox(src)
    out = io.BytesIO()
    archive.save(src, ["busybox"], out)
    dst = new_store(tmp_path / "b")
    assert archive.load(dst, io.BytesIO(out.getvalue())) == ["busybox:latest"]
    assert dst.get("busybox").id == rec.id
    assert (dst.layer_dirs(dst.get("busybox"))[0] / "bin" / "sh").is_symlink()


# -- load: other forms --------------------------------------------------------------------


def old_form_archive(tamper_layer: bool = False, tamper_config: bool = False) -> tuple[bytes, str]:
    """What ``docker save`` wrote before Docker 25."""
    l1 = make_tar({"bin/": None, "bin/tool": b"tool"})
    l2 = make_tar({"etc/": None, "etc/motd": b"hello"})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/tool"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(l1), sha(l2)]},
        "history": [{"created": "2023-01-01T00:00:00Z", "created_by": "x"}] * 2,
    }
    config_bytes = json.dumps(config).encode()
    image_id = sha(config_bytes)
    if tamper_config:
        config_bytes = config_bytes.replace(b"/bin/tool", b"/bin/evil")
    files = {
        f"{image_id[7:]}.json": config_bytes,
        "aaaa/VERSION": b"1.0",
        "aaaa/json": b"{}",
        "aaaa/layer.tar": l1,
        "bbbb/VERSION": b"1.0",
        "bbbb/json": b"{}",
        "bbbb/layer.tar": l2.replace(b"hello", b"HELLO") if tamper_layer else l2,
        "manifest.json": json.dumps(
            [
                {
                    "Config": f"{image_id[7:]}.json",
                    "RepoTags": ["old/form:v1", "localhost:5000/old:v1"],
                    "Layers": ["aaaa/layer.tar", "bbbb/layer.tar"],
                }
            ]
        ).encode(),
        "repositories": json.dumps({"old/form": {"v1": "bbbb"}}).encode(),
    }
    return make_tar(files), image_id


def test_load_old_docker_save(tmp_path: Path):
    data, image_id = old_form_archive()
    store = new_store(tmp_path)
    assert archive.load(store, io.BytesIO(data)) == ["localhost:5000/old:v1", "old/form:v1"]
    rec = store.get("old/form:v1")
    assert rec.id == image_id
    lower, upper = store.layer_dirs(rec)
    assert (lower / "bin" / "tool").read_bytes() == b"tool"
    assert (upper / "etc" / "motd").read_bytes() == b"hello"
    # It saves and re-loads with the same ID.
    out = io.BytesIO()
    archive.save(store, ["old/form:v1"], out)
    again = new_store(tmp_path / "again")
    archive.load(again, io.BytesIO(out.getvalue()))
    assert again.get("old/form:v1").id == image_id


def test_load_refuses_tampered_old_form(tmp_path: Path):
    store = new_store(tmp_path)
    data, _ = old_form_archive(tamper_layer=True)
    l2 = make_tar({"etc/": None, "etc/motd": b"hello"})
    with pytest.raises(InvalidArgument, match=sha(l2)):
        archive.load(store, io.BytesIO(data))
    data, image_id = old_form_archive(tamper_config=True)
    with pytest.raises(InvalidArgument, match=image_id):
        archive.load(store, io.BytesIO(data))
    assert store.list(all=True) == []


def test_load_refuses_tampered_blob(image, tmp_path: Path):
    store, rec = image
    out = io.BytesIO()
    archive.save(store, ["app:1"], out)
    files = members(out.getvalue())
    name = f"blobs/sha256/{rec.layer_digests[0][7:]}"
    files[name] = files[name].replace(b"ID=test", b"ID=evil")
    other = new_store(tmp_path / "dst")
    with pytest.raises(InvalidArgument, match=rec.layer_digests[0]):
        archive.load(other, io.BytesIO(rebuild(files)))
    assert other.list(all=True) == []


def test_load_refuses_paths_outside_archive(tmp_path: Path):
    data, _ = old_form_archive()
    files = members(data)
    manifest = json.loads(files["manifest.json"])
    manifest[0]["Layers"][0] = "../../../../etc/passwd"
    files["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(InvalidArgument, match="leaves the archive|missing"):
        archive.load(new_store(tmp_path), io.BytesIO(rebuild(files)))


def test_load_plain_oci_layout_with_index_and_gzip_layer(tmp_path: Path):
    layer = make_tar({"hello": b"world"})
    layer_gz = gzip.compress(layer, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(layer_gz),
                    "size": len(layer_gz),
                }
            ],
        }
    ).encode()
    from engine.images.store import HOST_ARCH

    nested = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha(manifest),
                    "size": len(manifest),
                    "platform": {"os": "linux", "architecture": HOST_ARCH},
                }
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": sha(nested),
                "size": len(nested),
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            },
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "quay.io/x/hello:v2"},
            },
        ],
    }
    files = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": json.dumps(index).encode(),
        **{f"blobs/sha256/{sha(b)[7:]}": b for b in (layer_gz, config, manifest, nested)},
    }
    store = new_store(tmp_path)
    assert archive.load(store, io.BytesIO(make_tar(files))) == ["quay.io/x/hello:v2"]
    rec = store.get("quay.io/x/hello:v2")
    assert rec.id == sha(config) and rec.manifest_digest == sha(manifest)
    assert rec.layer_digests == (sha(layer_gz),)  # kept compressed, byte for byte
    assert (store.layer_dirs(rec)[0] / "hello").read_bytes() == b"world"
    # A compressed blob saves as is.
    out = io.BytesIO()
    archive.save(store, ["quay.io/x/hello:v2"], out)
    assert members(out.getvalue())[f"blobs/sha256/{sha(layer_gz)[7:]}"] == layer_gz


def test_load_garbage(tmp_path: Path):
    store = new_store(tmp_path)
    with pytest.raises(InvalidArgument):
        archive.load(store, io.BytesIO(b"not a tar at all" * 100))
    with pytest.raises(InvalidArgument, match="no index.json or manifest.json"):
        archive.load(store, io.BytesIO(make_tar({"x": b"y"})))


# -- import ---------------------------------------------------------------------------------


def test_import_with_changes(tmp_path: Path):
    store = new_store(tmp_path)
    rootfs = gzip.compress(make_tar({"bin/": None, "bin/sh": b"fake", "srv/": None}))
    rec = archive.import_rootfs(
        store,
        io.BytesIO(rootfs),
        "imported:v1",
        changes=[
            'CMD ["sh", "-c", "echo hi"]',
            "ENTRYPOINT /entry.sh",
            "ENV A=1 B=two",
            "ENV C three words",
            "WORKDIR /srv",
            "USER nobody",
            "EXPOSE 80 53/udp",
            'LABEL team=core "desc=a b"',
            "VOLUME /data",
            "STOPSIGNAL SIGINT",
        ],
        message="from a tarball",
    )
    c = rec.config["config"]
    assert c["Cmd"] == ["sh", "-c", "echo hi"]
    assert c["Entrypoint"] == ["/bin/sh", "-c", "/entry.sh"]
    assert c["Env"] == ["A=1", "B=two", "C=three words"]
    assert (c["WorkingDir"], c["User"], c["StopSignal"]) == ("/srv", "nobody", "SIGINT")
    assert c["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert c["Labels"] == {"team": "core", "desc": "a b"}
    assert c["Volumes"] == {"/data": {}}
    assert rec.repo_tags == ("imported:v1",)
    (diff,) = store.layer_dirs(rec)
    assert (diff / "bin" / "sh").read_bytes() == b"fake"
    (row,) = store.history("imported:v1")
    assert row.comment == "from a tarball" and row.size == 4


def test_import_untagged_and_bad_change(tmp_path: Path):
    store = new_store(tmp_path)
    rec = archive.import_rootfs(store, io.BytesIO(make_tar({"f": b"x"})), None)
    assert rec.dangling and store.history(rec.id)[0].comment == "Imported from -"
    with pytest.raises(InvalidArgument, match="RUN is not a valid change command"):
        archive.import_rootfs(store, io.BytesIO(make_tar({"f": b"x"})), None, changes=["RUN true"])
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        archive.import_rootfs(store, io.BytesIO(make_tar({"f": b"x"})), "Bad:Ref")
