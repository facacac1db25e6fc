"""Multi-platform images (OCI index and Docker manifest list, pushed by hand
here), platform selection, and ``NAME@sha256:...`` pulls."""

from __future__ import annotations

import json

import pytest

from engine.errors import NotFound
from engine.registry.manifests import MT_DOCKER_LIST, MT_OCI_INDEX, Platform
from tests.engine.registry._helpers import (
    fetch_manifest,
    layer_tar,
    push_raw_image,
    registry_client,
)

pytestmark = pytest.mark.root

NATIVE = Platform.host()
OTHER = "arm64" if NATIVE.architecture != "arm64" else "amd64"


@pytest.fixture
def multi(registry_plain, busybox_env):
    """``multi/img:latest`` (OCI index) and ``:dlist`` (Docker list): this host's
    platform is real busybox (pushed by Berth), the other a small image made by hand."""
    reg = registry_plain
    host = reg.host
    busybox_env.berth("tag", "busybox", f"{host}/multi/img:native", check=True)
    busybox_env.berth("push", "-q", f"{host}/multi/img:native", check=True)
    with registry_client(host) as client:
        native_body, native_digest = fetch_manifest(client, "multi/img", "native")
        other_digest, other_size, _ = push_raw_image(
            client,
            "multi/img",
            "other",
            architecture=OTHER,
            layers=[layer_tar({"etc/arch": OTHER.encode()})],
        )
        entries = [
            {
                "mediaType": json.loads(native_body)["mediaType"],
                "digest": native_digest,
                "size": len(native_body),
                "platform": {"architecture": NATIVE.architecture, "os": "linux"},
            },
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": other_digest,
                "size": other_size,
                "platform": {"architecture": OTHER, "os": "linux"},
            },
            # An attestation entry, as buildx adds them: never chosen.
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": other_digest,
                "size": other_size,
                "platform": {"architecture": "unknown", "os": "unknown"},
            },
        ]
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries}
        ).encode()
        index_digest = client.put_manifest(
            "multi/img", "latest", index, MT_OCI_INDEX, "multi/img:latest"
        )
        dlist = json.dumps(
            {"schemaVersion": 2, "mediaType": MT_DOCKER_LIST, "manifests": entries[:2]}
        ).encode()
        dlist_digest = client.put_manifest(
            "multi/img", "dlist", dlist, MT_DOCKER_LIST, "multi/img:dlist"
        )
    return {
        "host": host,
        "index": index_digest,
        "dlist": dlist_digest,
        "native": native_digest,
        "other": other_digest,
        "busybox_id": busybox_env.engine().images.get("busybox").id,
    }


def test_index_pull_selects_this_hosts_platform_and_runs(multi, fresh_env):
    ref = f"{multi['host']}/multi/img:latest"
    p = fresh_env.berth("pull", ref, check=True)
    assert f"Digest: {multi['index']}" in p.stdout
    eng = fresh_env.engine()
    rec = eng.images.get(ref)
    assert rec.id == multi["busybox_id"]
    assert rec.manifest_digest == multi["native"]
    # The repo digest is the index's, as Docker records it.
    assert f"{multi['host']}/multi/img@{multi['index']}" in rec.repo_digests
    run = fresh_env.berth("run", "--rm", ref, "echo", "native", check=True)
    assert run.stdout == "native\n"


@pytest.mark.parametrize("tag", ["latest", "dlist"])
def test_platform_flag_selects_the_other(multi, fresh_env, tag):
    ref = f"{multi['host']}/multi/img:{tag}"
    p = fresh_env.berth("pull", "--platform", f"linux/{OTHER}", ref, check=True)
    assert p.stdout.splitlines()[-1] == ref
    rec = fresh_env.engine().images.get(ref)
    assert rec.config["architecture"] == OTHER
    assert rec.manifest_digest == multi["other"]
    inspect = json.loads(fresh_env.berth("image", "inspect", ref, check=True).stdout)[0]
    assert inspect["Architecture"] == OTHER


def test_no_matching_platform(multi, fresh_env):
    p = fresh_env.berth("pull", "--platform", "linux/s390x", f"{multi['host']}/multi/img:latest")
    assert p.returncode == 125
    err = p.stderr.strip()
    assert err.startswith(
        "Error: no matching manifest for linux/s390x in the manifest list entries"
    )
    assert f"linux/{NATIVE.architecture}" in err and f"linux/{OTHER}" in err
    assert "unknown" not in err


def test_platform_flag_on_single_platform_image(multi, fresh_env):
    with pytest.raises(
        NotFound, match=f"does not match the specified platform: wanted linux/{OTHER}"
    ):
        fresh_env.engine().pull_image(
            f"{multi['host']}/multi/img:native", platform=f"linux/{OTHER}"
        )


def test_pull_by_digest(multi, fresh_env):
    host = multi["host"]
    by_index = f"{host}/multi/img@{multi['index']}"
    p = fresh_env.berth("pull", by_index, check=True)
    lines = p.stdout.splitlines()
    assert lines[0] == f"{multi['index']}: Pulling from multi/img"
    assert lines[-2] == f"Status: Downloaded newer image for {by_index}"
    assert lines[-1] == by_index
    eng = fresh_env.engine()
    rec = eng.images.get(by_index)
    assert rec.repo_tags == ()  # a digest pull makes no tag
    assert by_index in rec.repo_digests
    # An image manifest's own digest works too, and is then up to date / no download.
    by_manifest = f"{host}/multi/img@{multi['other']}"
    result = eng.pull_image(by_manifest)
    assert result["Digest"] == multi["other"]
    assert eng.pull_image(by_manifest)["UpToDate"] is True
    run = fresh_env.berth("run", "--rm", by_index, "true")
    assert run.returncode == 0, run.stderr


def test_image_of_another_os_is_refused(registry_plain, fresh_env):
    from engine.errors import Unsupported

    with registry_client(registry_plain.host) as client:
        push_raw_image(
            client,
            "multi/windows",
            "latest",
            architecture="amd64",
            os_name="windows",
            layers=[layer_tar({"Files/x": b"x"})],
        )
    with pytest.raises(Unsupported, match="image operating system 'windows'"):
        fresh_env.engine().pull_image(f"{registry_plain.host}/multi/windows:latest")
    assert not fresh_env.engine().images.exists(f"{registry_plain.host}/multi/windows:latest")
