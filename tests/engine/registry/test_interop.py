"""Other clients read what Berth pushes (skopeo, podman), and Berth pulls what
they push (a Docker schema 2 manifest written by skopeo)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.engine.registry._helpers import add_multilayer_image
from tests.engine.registry._servers import PASSWORD, USER

pytestmark = pytest.mark.root

needs_skopeo = pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed")
needs_podman = pytest.mark.skipif(not shutil.which("podman"), reason="podman is not installed")


def _run(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
    assert p.returncode == 0, f"{argv}: {p.stderr}"
    return p


@needs_skopeo
@pytest.mark.parametrize("kind", ["plain", "token"])
def test_skopeo_copies_what_berth_pushed(kind, request, busybox_env, tmp_path):
    reg = request.getfixturevalue(f"registry_{kind}")
    ref = f"{reg.host}/interop/skopeo-{kind}:latest"
    add_multilayer_image(busybox_env, ref)
    if reg.needs_login:
        reg.login(busybox_env)
    pushed = busybox_env.engine().push_image(ref)
    creds = ["--src-creds", f"{USER}:{PASSWORD}"] if reg.needs_login else []
    out = tmp_path / "copy"
    _run(["skopeo", "copy", "--src-tls-verify=false", *creds, f"docker://{ref}", f"dir:{out}"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert [d["digest"] for d in manifest["layers"]] == [
        layer["Digest"] for layer in pushed["Layers"]
    ]
    config_digest = manifest["config"]["digest"]
    assert config_digest == busybox_env.engine().images.get(ref).id
    # skopeo verified every blob against its digest on the way.
    assert (out / config_digest.split(":")[1]).is_file()


@needs_podman
def test_podman_pulls_what_berth_pushed(registry_plain, busybox_env, tmp_path):
    ref = f"{registry_plain.host}/interop/podman:latest"
    add_multilayer_image(busybox_env, ref)
    busybox_env.engine().push_image(ref)
    # podman refuses a runroot longer than 50 characters
    root, runroot = tmp_path / "podman-root", Path(f"/run/bpod-{secrets.token_hex(4)}")
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CONTAINERS_CONF": str(conf),
        "HOME": str(tmp_path),
    }
    base = ["podman", "--root", str(root), "--runroot", str(runroot), "--storage-driver", "vfs"]
    try:
        _run([*base, "pull", "--tls-verify=false", ref], env=env)
        inspect = json.loads(_run([*base, "image", "inspect", ref], env=env).stdout)[0]
        assert "sha256:" + inspect["Id"] == busybox_env.engine().images.get(ref).id
        # Every layer's content arrived: the last layer's file is in the image.
        mount = Path(_run([*base, "image", "mount", ref], env=env).stdout.strip())
        assert (mount / "data" / "layer2.bin").stat().st_size == 500_000
    finally:
        subprocess.run([*base, "image", "unmount", "-a"], env=env, capture_output=True, check=False)
        subprocess.run([*base, "rmi", "-af"], env=env, capture_output=True, check=False)
        subprocess.run([*base, "system", "reset", "-f"], env=env, capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)


@needs_skopeo
def test_berth_pulls_docker_schema2_pushed_by_skopeo(registry_plain, busybox_env, fresh_env):
    host = registry_plain.host
    src = f"{host}/interop/source:latest"
    dst = f"{host}/interop/schema2:latest"
    busybox_env.berth("tag", "busybox", src, check=True)
    busybox_env.berth("push", "-q", src, check=True)
    _run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
            f"docker://{src}",
            f"docker://{dst}",
        ]
    )
    p = fresh_env.berth("pull", dst, check=True)
    assert f"Status: Downloaded newer image for {dst}" in p.stdout
    eng = fresh_env.engine()
    rec = eng.images.get(dst)
    manifest = json.loads(eng.images.blobs.read(rec.manifest_digest))
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert rec.id == busybox_env.engine().images.get("busybox").id
    run = fresh_env.berth("run", "--rm", dst, "echo", "schema2", check=True)
    assert run.stdout == "schema2\n"
