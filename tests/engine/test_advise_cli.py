"""`berth image advise` through the real CLI (a subprocess per command), on
busybox, on images made with `berth import` and `berth load`, and on a
Dockerfile directory."""

from __future__ import annotations

import io
import json
import tarfile

from tests.unit.test_advise_image import (
    MESSY_CONFIG,
    MESSY_HISTORY,
    MESSY_LAYERS,
    docker_archive,
)


def rootfs_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def advise_json(env, *args: str) -> dict:
    p = env.berth("image", "advise", "--format", "json", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def ids(report: dict) -> set[str]:
    return {f["id"] for f in report["findings"]}


def test_busybox_text_and_json(busybox_env):
    p = busybox_env.berth("image", "advise", "busybox")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Image busybox:latest (")
    assert "/bin/busybox  (layer 0)" in p.stdout  # the largest file, in the final filesystem
    assert "WARNING runs-as-root: the image runs as root" in p.stdout
    r = advise_json(busybox_env, "busybox")
    assert ids(r) == {"runs-as-root"}
    assert r["largest_files"][0]["path"] == "/bin/busybox"
    assert r["size"] == sum(layer["size"] for layer in r["layers"])
    p = busybox_env.berth("image", "advise", "--format",
                          "{{.savings}} {{range .findings}}{{.id}}{{end}}", "busybox")  # fmt: skip
    assert p.stdout == "0 runs-as-root\n"
    listed = busybox_env.berth("images", "--format", "{{.ID}}", "busybox").stdout.strip()
    assert r["id"][7:19] == listed


def test_imported_image_findings_follow_its_content_and_changes(eng_env, tmp_path):
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(rootfs_tar({
        "var/lib/apt/lists/deb.debian.org_Packages": bytes(250_000),
        "root/.cache/pip/wheels/x.whl": bytes(80_000),
        "app/server": bytes(10_000),
    }))  # fmt: skip
    eng_env.berth("import", "-c", "ENV API_KEY=sk-live-123456", str(tar), "imp:1", check=True)
    r = advise_json(eng_env, "imp:1")
    caches = {f["title"]: f["bytes"] for f in r["findings"] if f["id"] == "package-cache"}
    assert caches == {"apt lists left in layer 0": 250_000, "pip cache left in layer 0": 80_000}
    assert {"runs-as-root", "secret-in-config"} <= ids(r)
    assert "sk-live-123456" not in json.dumps(r)
    # The same content, with a user and no secret: those two findings go away.
    eng_env.berth("import", "-c", "USER 1000", str(tar), "imp:2", check=True)
    r = advise_json(eng_env, "imp:2")
    assert "runs-as-root" not in ids(r) and "secret-in-config" not in ids(r)
    assert "package-cache" in ids(r)


def test_loaded_multi_layer_image_by_id(eng_env, tmp_path):
    archive = tmp_path / "messy.tar"
    archive.write_bytes(docker_archive(MESSY_LAYERS, MESSY_HISTORY, ["messy:1"], MESSY_CONFIG))
    eng_env.berth("load", "-i", str(archive), check=True)
    image_id = eng_env.berth("images", "-q", "messy:1", check=True).stdout.strip()
    r = advise_json(eng_env, "--top", "3", image_id)
    assert len(r["largest_files"]) == 3 and len(r["layers"]) == len(MESSY_LAYERS)
    assert {"deleted-in-later-layer", "replaced-in-later-layer", "secret-in-file",
            "build-tools", "merge-runs", "add-instead-of-copy", "full-base"} <= ids(r)  # fmt: skip
    text = eng_env.berth("image", "advise", image_id, check=True).stdout
    assert "/tmp/big.bin  (deleted or replaced later)" in text


def test_dockerfile_directory_and_context_flag(eng_env, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM debian:bookworm\nCOPY app /app\nRUN rm /app\n")
    (ctx / "app").write_bytes(bytes(4096))
    r = advise_json(eng_env, str(ctx))
    assert r["kind"] == "dockerfile" and r["target"] == str(ctx / "Dockerfile")
    assert {"full-base", "deleted-in-later-layer", "runs-as-root"} == ids(r)
    other = tmp_path / "other"
    other.mkdir()
    r = advise_json(eng_env, "--context", str(other), str(ctx / "Dockerfile"))
    assert r["context"]["path"] == str(other) and "deleted-in-later-layer" not in ids(r)
    text = eng_env.berth("image", "advise", str(ctx), check=True).stdout
    assert "line 2: COPY app /app" in text and "line 3: RUN rm /app" in text


def test_bad_input_exits_125_with_a_clear_error(eng_env, tmp_path):
    p = eng_env.berth("image", "advise", "nosuch:1")
    assert p.returncode == 125 and "No such image: nosuch:1" in p.stderr
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    p = eng_env.berth("image", "advise", "--format", "{{.savings", str(tmp_path))
    assert p.returncode == 125 and "template" in p.stderr
    p = eng_env.berth("image", "advise", "--context", str(tmp_path), "busybox")
    assert p.returncode == 125 and "--context applies to a Dockerfile" in p.stderr
    (tmp_path / "Dockerfile").write_text("RUN true\n")
    p = eng_env.berth("image", "advise", str(tmp_path / "Dockerfile"))
    assert (
        p.returncode == 125 and "Dockerfile:1" in p.stderr and "before the first FROM" in p.stderr
    )


def test_listed_under_image(eng_env):
    p = eng_env.berth("image", "--help")
    assert "advise" in p.stdout
