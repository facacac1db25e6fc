"""Helpers for the registry tests: images with several layers, store snapshots."""

from __future__ import annotations

import io
import os
import tarfile


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def add_multilayer_image(
    env, ref: str, sizes: tuple[int, ...] = (300_000, 400_000, 500_000)
) -> dict:
    """An image on top of busybox's layer with extra layers of pseudo-random
    data (so gzip cannot shrink them to nothing); returns the record summary."""
    eng = env.engine()
    base = eng.images.get("busybox:latest")
    layers: list = [eng.images.blobs.path(d) for d in base.layer_digests]
    for i, size in enumerate(sizes):
        data = os.urandom(size // 2) + bytes(size - size // 2)
        layers.append(layer_tar({f"data/layer{i}.bin": data}))
    cfg = {
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "history": [{"created_by": "busybox"}]
        + [{"created_by": f"layer {i}"} for i in range(len(sizes))],
    }
    rec = eng.images.add_image(layers, cfg, [ref])
    return {"id": rec.id, "layers": rec.layer_digests, "diff_ids": rec.diff_ids}


def store_snapshot(env) -> tuple[set[str], set[str], set[str]]:
    """(blob files, layer dirs, staging files) of an engine's image store."""
    images = env.root / "images"
    blobs = (
        {p.name for p in (images / "blobs" / "sha256").glob("*")}
        if (images / "blobs").exists()
        else set()
    )
    layers = (
        {p.name for p in (images / "layers").glob("*")} if (images / "layers").exists() else set()
    )
    tmp = {p.name for p in (images / "tmp").glob("*")} if (images / "tmp").exists() else set()
    return blobs, layers, tmp


def registry_client(host: str, username: str = "", password: str = ""):
    from engine.registry.client import RegistryClient
    from engine.registry.credentials import Credentials
    from engine.registry.hosts import RegistryHosts

    creds = Credentials(username, password) if username else None
    return RegistryClient(host, hosts=RegistryHosts(), credentials=creds)


def upload(client, repo: str, data: bytes) -> str:
    """Upload one blob (monolithic PUT); returns its digest."""
    from engine.images.content import sha256_bytes

    digest = sha256_bytes(data)
    location = client.start_upload(repo)
    client.finish_upload(repo, location, digest, body=data, length=len(data))
    return digest


def push_raw_image(
    client,
    repo: str,
    tag: str,
    *,
    architecture: str,
    layers: list[bytes],
    diff_ids: list[str] | None = None,
    docker_types: bool = False,
    os_name: str = "linux",
) -> tuple[str, int, bytes]:
    """Push an image made by hand (uncompressed layers); -> (manifest digest, size, bytes)."""
    import json

    from engine.images.content import sha256_bytes

    diff_ids = diff_ids or [sha256_bytes(layer) for layer in layers]
    config = {
        "architecture": architecture,
        "os": os_name,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }
    config_bytes = json.dumps(config).encode()
    layer_type = (
        "application/vnd.docker.image.rootfs.diff.tar"
        if docker_types
        else "application/vnd.oci.image.layer.v1.tar"
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": (
            "application/vnd.docker.distribution.manifest.v2+json"
            if docker_types
            else "application/vnd.oci.image.manifest.v1+json"
        ),
        "config": {
            "mediaType": (
                "application/vnd.docker.container.image.v1+json"
                if docker_types
                else "application/vnd.oci.image.config.v1+json"
            ),
            "digest": upload(client, repo, config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": layer_type, "digest": upload(client, repo, b), "size": len(b)}
            for b in layers
        ],
    }
    body = json.dumps(manifest).encode()
    digest = client.put_manifest(repo, tag, body, manifest["mediaType"], what=f"{repo}:{tag}")
    assert digest == sha256_bytes(body)
    return digest, len(body), body


def fetch_manifest(client, repo: str, reference: str) -> tuple[bytes, str]:
    from engine.images.content import sha256_bytes
    from engine.registry.manifests import ACCEPT

    body, _ctype, _digest = client.get_manifest(repo, reference, ACCEPT, what=f"{repo}:{reference}")
    return body, sha256_bytes(body)
