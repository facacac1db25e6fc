"""`image advise` on images: layers and files (whiteouts, opaque dirs, rewrites)
and every image-side finding, each asserted where it applies and where it does
not. Images are real: crafted `docker save` archives loaded through the engine."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from engine.api import Engine
from engine.api_advise import AdviseAPI
from engine.errors import InvalidArgument, NotFound

KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
DPKG_STATUS = b"""Package: libc6
Status: install ok installed
Installed-Size: 12000
Description: GNU C Library
 shared libraries

Package: gcc-12
Status: install ok installed
Installed-Size: 70000

Package: make
Status: install ok installed
Installed-Size: 1500

Package: libssl-dev
Status: install ok installed
Installed-Size: 9000

Package: oldpkg
Status: deinstall ok config-files
Installed-Size: 99999
"""


def layer_tar(files: dict[str, bytes | int | None]) -> bytes:
    """A layer: name -> bytes, a size (that many zero bytes), or None (a directory).
    Whiteouts are ``dir/.wh.name`` entries and ``dir/.wh..wh..opq``, as Docker writes them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            blob = bytes(data) if isinstance(data, int) else data
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def docker_archive(
    layers: list[bytes],
    created_by: list[str],
    tags: list[str],
    config: dict | None = None,
    empty: list[str] = (),
) -> bytes:
    """A `docker save` archive (manifest.json form) of one image; ``empty`` adds
    metadata-only history entries (ENV, USER...) after the layers."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    history = [{"created": "2024-01-01T00:00:00Z", "created_by": c} for c in created_by]
    history += [{"created": "2024-01-01T00:00:00Z", "created_by": c, "empty_layer": True}
                for c in empty]  # fmt: skip
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    cfg_bytes = json.dumps(cfg).encode()
    cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
    manifest = [{"Config": cfg_name, "RepoTags": tags,
                 "Layers": [f"l{i}/layer.tar" for i in range(len(layers))]}]  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entries = {cfg_name: cfg_bytes, "manifest.json": json.dumps(manifest).encode()}
        entries.update({f"l{i}/layer.tar": layer for i, layer in enumerate(layers)})
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def load(eng, archive: bytes) -> str:
    names = eng.load_images(io.BytesIO(archive))
    assert len(names) == 1
    return names[0]


def advisor(eng_env):
    """The Engine, with AdviseAPI mixed in if engine/api.py does not do it yet."""
    if issubclass(Engine, AdviseAPI):
        return Engine(eng_env.config())
    return type("E", (AdviseAPI, Engine), {})(eng_env.config())


def ids(report: dict) -> list[str]:
    return [f["id"] for f in report["findings"]]


def only(report: dict, fid: str) -> list[dict]:
    return [f for f in report["findings"] if f["id"] == fid]


# -- a messy image and a tidy one ----------------------------------------------------------

MESSY_LAYERS = [
    layer_tar(
        {
            "etc/": None,
            "etc/os-release": b"ID=debian\nVERSION_CODENAME=bookworm\n",
            "var/lib/dpkg/status": DPKG_STATUS,
            "usr/share/doc/libc6/changelog.gz": 1_500_000,
            "usr/share/doc/libc6/copyright": 4_000,
            "usr/share/man/man1/ls.1.gz": 300_000,
            "bin/sh": 100_000,
        }
    ),
    layer_tar(
        {
            "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_Packages.lz4": 300_000,
            "var/lib/apt/lists/lock": b"",
            "var/cache/apt/archives/gcc-12.deb": 200_000,
            "root/.cache/pip/http/ab/cd": 120_000,
            "usr/bin/gcc": 50_000,
            "tmp/big.bin": 1_000_000,
            "app/run.sh": 40_000,
        }
    ),
    layer_tar(
        {
            "var/lib/apt/lists/.wh.deb.debian.org_debian_dists_bookworm_main_Packages.lz4": b"",
            "tmp/.wh.big.bin": b"",
            "app/run.sh": 40_000,  # chmod +x: the whole file again
        }
    ),
    layer_tar({"app/app.py": b"print('hi')\n"}),
    layer_tar({"root/.ssh/id_rsa": KEY, "root/.ssh/known_hosts": b"host key\n"}),
    layer_tar({"root/.ssh/.wh.id_rsa": b""}),
]
MESSY_HISTORY = [
    "/bin/sh -c #(nop) ADD file:0123abcd in / ",
    "/bin/sh -c apt-get update && apt-get install -y gcc make",
    "|1 NPM_TOKEN=abcdef123456 /bin/sh -c rm -rf /var/lib/apt/lists/* /tmp/big.bin && chmod +x /app/run.sh",
    "ADD app.py /app/ # buildkit",
    "COPY id_rsa /root/.ssh/ # buildkit",
    "RUN /bin/sh -c rm /root/.ssh/id_rsa # buildkit",
]
MESSY_CONFIG = {
    "Env": [
        "PATH=/usr/bin:/bin",
        "DB_PASSWORD=hunter2hunter2",
        "GPG_KEY=A035C8C19219BA82",
        "EMPTY_TOKEN=",
    ],
    "Labels": {"api-token": "xyz123456789", "maintainer": "me"},
    "User": "",
}
TIDY_LAYERS = [
    layer_tar({"app/": None, "app/server": 600_000, "app/static/logo.png": 20_000}),
    layer_tar({"app/config.yml": b"port: 8080\n"}),
]
TIDY_HISTORY = ["COPY server /app/ # buildkit", "COPY config.yml /app/ # buildkit"]
TIDY_CONFIG = {"Env": ["PATH=/bin", "PASSWORD_FILE=/run/secrets/pw"], "User": "1000:1000",
               "Labels": {"org.opencontainers.image.base.name": "debian:bookworm-slim"}}  # fmt: skip


@pytest.fixture
def messy(eng_env):
    eng = advisor(eng_env)
    load(eng, docker_archive(MESSY_LAYERS, MESSY_HISTORY, ["messy:1"], MESSY_CONFIG, ["USER root"]))
    return eng, eng.advise_image("messy:1")


@pytest.fixture
def tidy(eng_env):
    eng = advisor(eng_env)
    load(eng, docker_archive(TIDY_LAYERS, TIDY_HISTORY, ["tidy:1"], TIDY_CONFIG))
    return eng, eng.advise_image("tidy:1")


def test_layers_sizes_and_history(messy):
    eng, r = messy
    rec = eng.images.get("messy:1")
    assert r["kind"] == "image" and r["id"] == rec.id and r["tags"] == ["messy:1"]
    assert r["size"] == rec.size
    assert [layer["size"] for layer in r["layers"]] == [i.size for i in eng.images.layer_infos(rec)]
    # The layer sizes are the history's sizes (docker history's SIZE column).
    hist = [h for h in eng.image_history("messy:1") if not h["EmptyLayer"]][::-1]
    assert [layer["size"] for layer in r["layers"]] == [h["SizeBytes"] for h in hist]
    assert r["layers"][1]["created_by"].startswith("/bin/sh -c apt-get update")
    assert r["layers"][3]["created_by"] == "ADD app.py /app/"
    assert r["layers"][2]["deletes"] == 2 and r["layers"][5]["deletes"] == 1


def test_largest_files_take_whiteouts_into_account(messy):
    _, r = messy
    final = {f["path"]: f for f in r["largest_files"]}
    assert "/tmp/big.bin" not in final  # deleted by layer 2
    assert final["/usr/share/doc/libc6/changelog.gz"] == {
        "path": "/usr/share/doc/libc6/changelog.gz", "size": 1_500_000, "layer": 0}  # fmt: skip
    assert final["/app/run.sh"]["layer"] == 2  # the rewritten copy is the one seen
    assert r["largest_files"][0]["path"] == "/usr/share/doc/libc6/changelog.gz"
    sizes = [f["size"] for f in r["largest_files"]]
    assert sizes == sorted(sizes, reverse=True)
    layer1 = {f["path"]: f for f in r["layers"][1]["largest"]}
    assert layer1["/tmp/big.bin"]["live"] is False and layer1["/usr/bin/gcc"]["live"] is True


def test_package_caches_with_bytes(messy, tidy):
    _, r = messy
    caches = {f["title"]: f for f in only(r, "package-cache")}
    assert caches["apt lists left in layer 1"]["bytes"] == 300_000
    assert "still ship" in caches["apt lists left in layer 1"]["detail"]  # deleted later
    assert caches["apt archives left in layer 1"]["bytes"] == 200_000
    assert caches["pip cache left in layer 1"]["bytes"] == 120_000
    assert all(f["layers"] == [1] for f in caches.values())
    assert caches["pip cache left in layer 1"]["text"] == [
        "history #1: /bin/sh -c apt-get update && apt-get install -y gcc make"]  # fmt: skip
    assert not only(tidy[1], "package-cache")


def test_deleted_and_rewritten_in_later_layers(messy, tidy):
    _, r = messy
    deleted = {tuple(f["layers"]): f for f in only(r, "deleted-in-later-layer")}
    assert deleted[(1, 2)]["bytes"] == 1_300_000  # big.bin + the apt list file
    assert {p["path"] for p in deleted[(1, 2)]["paths"]} == {
        "/tmp/big.bin", "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_Packages.lz4"}  # fmt: skip
    assert deleted[(4, 5)]["bytes"] == len(KEY)
    replaced = only(r, "replaced-in-later-layer")
    assert [(f["layers"], f["bytes"]) for f in replaced] == [([1, 2], 40_000)]
    assert not only(tidy[1], "deleted-in-later-layer")
    assert not only(tidy[1], "replaced-in-later-layer")


def test_savings_count_a_deleted_cache_once(messy):
    _, r = messy
    total = sum(f["bytes"] or 0 for f in r["findings"])
    assert r["savings"] == total - 300_000  # the apt list is both a cache and deleted later


def test_opaque_directory_hides_the_lower_tree(eng_env):
    eng = advisor(eng_env)
    layers = [
        layer_tar({"data/a": 500_000, "data/sub/b": 70_000, "keep/x": 10}),
        layer_tar({"data/.wh..wh..opq": b"", "data/c": 5}),
    ]
    load(eng, docker_archive(layers, ["COPY data /data", "RUN x"], ["opq:1"]))
    r = eng.advise_image("opq:1")
    live = {f["path"] for f in r["largest_files"]}
    assert live == {"/data/c", "/keep/x"}
    (f,) = only(r, "deleted-in-later-layer")
    assert f["bytes"] == 570_000 and f["layers"] == [0, 1]


def test_full_base_from_content_and_from_names(messy, tidy, eng_env):
    _, r = messy
    (f,) = only(r, "full-base")
    # Docs and man pages of the base layer; the copyright file stays in -slim too.
    assert f["bytes"] == 1_800_000 and f["layers"] == [0]
    assert not only(tidy[1], "full-base")  # labelled debian:bookworm-slim, no docs
    # Without a base-name label, the image's own name is what we judge.
    eng = tidy[0]
    load(eng, docker_archive(TIDY_LAYERS, TIDY_HISTORY, ["python:3.11"], {"User": "1"}))
    (f,) = only(eng.advise_image("python:3.11"), "full-base")
    assert "python:3.11-slim" in f["fix"] and f["bytes"] is None  # no Debian docs to count
    eng.tag_image("messy:1", "debian:bookworm")  # the name and the content agree
    (f,) = only(eng.advise_image("debian:bookworm"), "full-base")
    assert "debian:bookworm-slim" in f["fix"] and f["bytes"] == 1_800_000
    eng.tag_image("python:3.11", "node:20-slim")
    assert not only(eng.advise_image("node:20-slim"), "full-base")


def test_merge_runs(messy, tidy):
    (f,) = only(messy[1], "merge-runs")
    assert f["layers"] == [1, 2]
    assert [t.split(":")[0] for t in f["text"]] == ["history #1", "history #2"]
    assert not only(tidy[1], "merge-runs")


def test_build_tools_from_the_package_database(messy, tidy):
    (f,) = only(messy[1], "build-tools")
    assert {p["path"] for p in f["paths"]} == {"gcc-12", "make", "libssl-dev"}
    assert f["bytes"] == (70000 + 1500 + 9000) * 1024
    assert not only(tidy[1], "build-tools")


def test_build_tools_from_files_without_a_package_database(eng_env):
    eng = advisor(eng_env)
    load(eng, docker_archive([layer_tar({"usr/bin/gcc": 900, "usr/include/stdio.h": 100})],
                             ["COPY / /"], ["tc:1"], {"User": "app"}))  # fmt: skip
    (f,) = only(eng.advise_image("tc:1"), "build-tools")
    assert f["bytes"] == 1000


def test_runs_as_root(messy, tidy, busybox_env):
    assert only(messy[1], "runs-as-root")
    assert not only(tidy[1], "runs-as-root")
    r = advisor(busybox_env).advise_image("busybox")
    assert [f["id"] for f in r["findings"]] == ["runs-as-root"]


def test_secrets_in_env_labels_and_build_args_are_masked(messy, tidy):
    (f,) = only(messy[1], "secret-in-config")
    assert f["text"][:3] == ["ENV DB_PASSWORD", "LABEL api-token", "ARG NPM_TOKEN"]
    assert "GPG_KEY" not in f["detail"] and "EMPTY_TOKEN" not in f["detail"]
    for value in ("hunter2hunter2", "xyz123456789", "abcdef123456"):
        assert value not in json.dumps(messy[1])  # never printed
    assert not only(tidy[1], "secret-in-config")  # PASSWORD_FILE names a path


def test_private_key_in_a_layer_even_when_deleted_later(messy, tidy):
    (f,) = only(messy[1], "secret-in-file")
    assert f["paths"][0]["path"] == "/root/.ssh/id_rsa" and f["layers"] == [4]
    assert "deleted in a later layer" in f["detail"]
    assert KEY.decode() not in json.dumps(messy[1])
    assert not only(tidy[1], "secret-in-file")


def test_add_where_copy_suffices(messy, tidy, eng_env):
    (f,) = only(messy[1], "add-instead-of-copy")
    assert f["layers"] == [3] and "ADD app.py /app/" in f["text"][0]
    assert not only(tidy[1], "add-instead-of-copy")


def test_git_directory_copied_into_the_image(eng_env):
    eng = advisor(eng_env)
    load(eng, docker_archive([layer_tar({"src/.git/objects/pack/p.pack": 250_000, "src/a.py": 10})],
                             ["COPY . /src # buildkit"], ["git:1"], {"User": "1"}))  # fmt: skip
    (f,) = only(eng.advise_image("git:1"), "context-junk-in-image")
    assert f["bytes"] == 250_000 and f["paths"][0]["path"] == "/src/.git"
    assert not only(tidy_report(eng), "context-junk-in-image")


def tidy_report(eng):
    load(eng, docker_archive(TIDY_LAYERS, TIDY_HISTORY, ["tidy:1"], TIDY_CONFIG))
    return eng.advise_image("tidy:1")


def test_tidy_image_has_no_findings(tidy):
    assert tidy[1]["findings"] == [] and tidy[1]["savings"] == 0


def test_errors_name_the_problem(eng_env):
    eng = advisor(eng_env)
    with pytest.raises(NotFound, match="No such image: nosuch:1"):
        eng.advise_image("nosuch:1")
    with pytest.raises(InvalidArgument):
        eng.advise("x", kind="container")


def test_report_is_plain_json(messy):
    _, r = messy
    assert json.loads(json.dumps(r)) == r


def test_directory_whiteout_and_hard_links(eng_env):
    eng = advisor(eng_env)
    hard = io.BytesIO()
    with tarfile.open(fileobj=hard, mode="w") as tar:
        info = tarfile.TarInfo("opt/tool/bin/t")
        info.size = 90_000
        tar.addfile(info, io.BytesIO(bytes(90_000)))
        link = tarfile.TarInfo("opt/tool/bin/t2")
        link.type, link.linkname = tarfile.LNKTYPE, "opt/tool/bin/t"
        tar.addfile(link)
        info = tarfile.TarInfo("opt/tool/share/x")
        info.size = 10_000
        tar.addfile(info, io.BytesIO(bytes(10_000)))
    layers = [hard.getvalue(), layer_tar({"opt/.wh.tool": b"", "opt/keep": 1})]
    load(eng, docker_archive(layers, ["COPY tool /opt/tool", "RUN rm -rf /opt/tool"], ["dw:1"]))
    r = eng.advise_image("dw:1")
    assert r["layers"][0]["size"] == 100_000  # the hard link's inode counted once
    assert [f["path"] for f in r["largest_files"]] == ["/opt/keep"]
    (f,) = only(r, "deleted-in-later-layer")
    assert f["bytes"] == 100_000 and f["layers"] == [0, 1]


def test_test_suite_keys_are_not_secrets(eng_env):
    eng = advisor(eng_env)
    layer = layer_tar({"usr/lib/python3/dist-packages/requests/tests/certs/server.key": KEY,
                       "usr/share/doc/libxmlsec1/examples/rsakey.pem": KEY,
                       "etc/ssl/private/site.key": KEY})  # fmt: skip
    load(eng, docker_archive([layer], ["COPY / /"], ["keys:1"], {"User": "1"}))
    (f,) = only(eng.advise_image("keys:1"), "secret-in-file")
    assert [p["path"] for p in f["paths"]] == ["/etc/ssl/private/site.key"]
