"""``commit``: a container's upper dir as a new layer on top of its image.

The new image shares the base image's layer blobs (the manifest lists them
again; nothing is re-hashed) and adds one uncompressed layer made from the
overlay upper dir by :func:`engine.images.layers.diff_to_tar` (whiteouts become
``.wh.`` entries). Empty mount points that the runtime created in the rootfs
(``/etc/hosts``...) are left out, as Docker's init layer keeps them out.
Its config is the container's effective one (what ``run`` resolved from the
image and the options) with ``--change`` applied, plus a history entry.
A running container is paused meanwhile (Docker's default) so the layer is
a consistent snapshot.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import stat
import tarfile
from typing import BinaryIO

from engine.containers import lifecycle, records
from engine.containers.cp import piped
from engine.containers.diff import _Lower, mount_points
from engine.containers.records import Container, Paths
from engine.errors import EngineError
from engine.locks import file_lock
from engine.runtime.oci import pid_alive

_OCI_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
}


def effective_config(eng, c: Container) -> dict:
    """Docker's ``Config`` of the container, in image-config form."""
    base = (eng.images.get_by_id(c.image_id).config or {}).get("config") or {}
    cfg = copy.deepcopy(base)
    if c.opts.entrypoint is not None:
        cfg["Entrypoint"] = list(c.opts.entrypoint) or None
        cfg["Cmd"] = list(c.opts.command or []) or None
    elif c.opts.command:
        cfg["Cmd"] = list(c.opts.command)
    cfg["Env"] = list(c.env)
    cfg["WorkingDir"] = c.workdir if c.workdir != "/" or base.get("WorkingDir") else ""
    cfg["User"] = c.user
    if c.exposed_ports:
        cfg["ExposedPorts"] = dict(c.exposed_ports)
    labels = dict(base.get("Labels") or {})
    labels.update(c.opts.labels)
    cfg["Labels"] = labels or None
    if c.opts.stop_signal:
        cfg["StopSignal"] = c.opts.stop_signal
    return {k: v for k, v in cfg.items() if v is not None}


def _artifacts(c: Container, upper: str, lower: _Lower) -> set[str]:
    """Runtime-made empty mount points in the upper dir that the image lacks."""
    out = set()
    for rel in mount_points(c):
        try:
            st = os.lstat(
                os.path.join(upper, rel)
            )  # upper is ours; rel has no links in it we follow
        except OSError:
            continue
        empty = (stat.S_ISREG(st.st_mode) and st.st_size == 0) or (
            stat.S_ISDIR(st.st_mode) and not os.listdir(os.path.join(upper, rel))
        )
        if empty and lower.lstat(rel) is None:
            out.add(rel)
    return out


def _filter(src: BinaryIO, out: BinaryIO, drop: set[str]) -> None:
    with (
        tarfile.open(fileobj=src, mode="r|") as tin,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tout,
    ):
        for m in tin:
            if m.name.strip("/") in drop:
                continue
            tout.addfile(m, tin.extractfile(m) if m.isreg() else None)


def commit(
    eng, c: Container, repo_tag: str, message: str = "", author: str = "", changes: list[str] | None = None,
    pause: bool = True,
) -> str:  # fmt: skip
    from engine.images import layers
    from engine.images.archive import apply_changes
    from engine.images.content import Descriptor, check_digest
    from engine.images.store import MT_OCI_CONFIG, MT_OCI_LAYER, MT_OCI_MANIFEST, now_rfc3339

    store = eng.images
    p = Paths(eng.config, c.id)
    base = store.get_by_id(c.image_id)
    # Config errors (a bad --change) before any pause or write.
    cfg = copy.deepcopy(base.config)
    cfg["config"] = effective_config(eng, c)
    apply_changes(cfg, changes or [])
    lower = _Lower(store.layer_dirs(base))
    drop = _artifacts(c, str(p.upper), lower)

    rt = lifecycle._runtime(eng, c)
    with file_lock(p.lock):  # no start/cleanup of this container meanwhile
        cur = records.load(eng.db, c.id)
        paused_here = False
        if pause and cur.state == "running" and pid_alive(cur.pid):
            rt.pause(c.id)
            paused_here = True
        try:
            with store.writing():  # GC must not take our blobs before they are indexed
                with piped(lambda out: layers.diff_to_tar(p.upper, out)) as raw:
                    with piped(lambda out: _filter(raw, out, drop)) as tar:
                        diff_id, size = store.blobs.put_stream(tar)
        finally:
            if paused_here:
                try:
                    rt.resume(c.id)
                except EngineError:
                    if pid_alive(cur.pid):
                        raise
    diff_id = check_digest(diff_id)
    created = now_rfc3339()
    cfg["created"] = created
    cfg["container"] = c.id
    if author:
        cfg["author"] = author
    else:
        cfg.pop("author", None)
    cfg["rootfs"] = {"type": "layers", "diff_ids": [*base.diff_ids, diff_id]}
    entry = {"created": created, "created_by": shlex.join(c.args)}
    if message:
        entry["comment"] = message
    if author:
        entry["author"] = author
    cfg["history"] = [*(base.config.get("history") or []), entry]
    config_bytes = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    base_manifest = json.loads(store.blobs.read(base.manifest_digest))
    base_layers = []
    for d in base_manifest.get("layers") or []:
        d = dict(d)
        d["mediaType"] = _OCI_LAYER_TYPES.get(d.get("mediaType", ""), d.get("mediaType"))
        base_layers.append(d)
    with store.writing():
        config_digest = store.blobs.put_bytes(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": Descriptor(MT_OCI_CONFIG, config_digest, len(config_bytes)).to_json(),
            "layers": [*base_layers, Descriptor(MT_OCI_LAYER, diff_id, size).to_json()],
        }
        rec = store.register_manifest(
            json.dumps(manifest, separators=(",", ":")).encode(),
            [repo_tag] if repo_tag else [],
            parent=base.id,
        )
    eng.emit(
        "container", "commit", c.id, name=c.name, imageID=rec.id, comment=message, author=author
    )
    return rec.id


__all__ = ["commit", "effective_config"]
