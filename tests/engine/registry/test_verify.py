"""Everything from the registry is verified: a tampered layer, a manifest that
does not match the digest asked for, a layer whose content is not the one
its config names — each refused with a clear error, nothing left behind."""

from __future__ import annotations

import pytest

from engine.errors import InvalidArgument
from tests.engine.registry._helpers import (
    add_multilayer_image,
    fetch_manifest,
    layer_tar,
    push_raw_image,
    registry_client,
    store_snapshot,
)

pytestmark = pytest.mark.root


def _flip_bytes(path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    at = min(at, len(data) - 1)
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_layer_is_refused_and_nothing_is_left(registry_plain, busybox_env, fresh_env):
    reg = registry_plain
    ref = f"{reg.host}/verify/tamper:latest"
    add_multilayer_image(busybox_env, ref)
    pushed = busybox_env.engine().push_image(ref)
    tampered = pushed["Layers"][-1]["Digest"]  # a layer of random data: no other test has it
    _flip_bytes(reg.registry.blob_path(tampered))

    fresh_env.engine().bootstrap_image("busybox")  # some content before, to see it is kept
    before = store_snapshot(fresh_env)
    p = fresh_env.berth("pull", ref)
    assert p.returncode == 125
    err = p.stderr.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"Error: blob {tampered} of {ref} failed verification")
    assert "refused" in err
    assert not fresh_env.engine().images.exists(ref)
    blobs, layers, tmp = store_snapshot(fresh_env)
    assert (blobs, layers) == before[:2], "the failed pull left blobs or layers behind"
    assert not tmp


def test_manifest_not_matching_its_digest_is_refused(registry_plain, busybox_env, fresh_env):
    reg = registry_plain
    ref = f"{reg.host}/verify/manifest:latest"
    with registry_client(reg.host) as client:
        digest, _size, body = push_raw_image(
            client,
            "verify/manifest",
            "latest",
            architecture="amd64",
            layers=[layer_tar({"a": b"x"})],
        )
    # The registry keeps manifests as blobs: change a byte that keeps the JSON valid.
    path = reg.registry.blob_path(digest)
    text = path.read_bytes()
    assert b'"schemaVersion": 2' in text
    path.write_bytes(text.replace(b'"schemaVersion": 2', b'"schemaVersion":  2'))
    try:
        with pytest.raises(InvalidArgument, match=f"manifest {digest} of .* failed verification"):
            fresh_env.engine().pull_image(f"{reg.host}/verify/manifest@{digest}")
        # By tag the registry's Docker-Content-Digest (from its link) no longer matches either.
        with pytest.raises(InvalidArgument, match="failed verification"):
            fresh_env.engine().pull_image(ref)
    finally:
        path.write_bytes(body)
    assert store_snapshot(fresh_env)[0] == set()


def test_layer_not_matching_diff_id_is_refused(registry_plain, fresh_env):
    reg = registry_plain
    layer = layer_tar({"hello.txt": b"hello"})
    wrong = "sha256:" + "ab" * 32
    with registry_client(reg.host) as client:
        push_raw_image(
            client,
            "verify/diffid",
            "latest",
            architecture="amd64",
            layers=[layer],
            diff_ids=[wrong],
        )
    with pytest.raises(InvalidArgument, match="failed verification.*the image config says"):
        fresh_env.engine().pull_image(f"{reg.host}/verify/diffid:latest")
    blobs, layers, tmp = store_snapshot(fresh_env)
    assert not blobs and not layers and not tmp


def test_registry_manifest_is_kept_byte_for_byte(registry_plain, fresh_env):
    reg = registry_plain
    layer = layer_tar({"keep.txt": b"same bytes"})
    with registry_client(reg.host) as client:
        digest, _, body = push_raw_image(
            client, "verify/bytes", "v1", architecture="amd64", layers=[layer]
        )
        got, got_digest = fetch_manifest(client, "verify/bytes", "v1")
    assert got == body and got_digest == digest
    result = fresh_env.engine().pull_image(f"{reg.host}/verify/bytes:v1")
    rec = fresh_env.engine().images.get(f"{reg.host}/verify/bytes:v1")
    assert rec.manifest_digest == digest == result["Digest"]
    assert fresh_env.engine().images.blobs.read(digest) == body
