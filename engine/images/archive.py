"""Images in and out as files: ``import`` of a rootfs tar, ``load`` and
``save`` of ``docker save`` archives and OCI image layouts.

Everything read from an archive is untrusted: paths named inside it are
confined to it, every blob must hash to the digest that names it, and every
layer's uncompressed content to the image config's diff ID.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import tarfile
import uuid
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from engine.errors import InvalidArgument, NotFound, Unsupported
from engine.images import reference as refs
from engine.images.content import Descriptor, check_digest, decompressed, sha256_bytes
from engine.images.store import (
    HOST_ARCH,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MT_OCI_CONFIG,
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_MANIFEST,
    ImageRecord,
    ImageStore,
    now_rfc3339,
)

ANNOT_REF_NAME = "org.opencontainers.image.ref.name"
ANNOT_CONTAINERD_NAME = "io.containerd.image.name"
CHANGE_COMMANDS = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)


# -- import ---------------------------------------------------------------------------------


def _exec_form(text: str) -> list[str]:
    # JSON array form if it parses as one, else shell form (as Docker does).
    if text.startswith("["):
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
    return ["/bin/sh", "-c", text]


def apply_changes(config: dict, changes: Sequence[str]) -> None:
    """Apply ``--change`` Dockerfile instructions to an image config's ``config``."""
    c = config.setdefault("config", {})
    for change in changes:
        parts = change.strip().split(None, 1)
        if not parts:
            continue
        instr, rest = parts[0].upper(), (parts[1].strip() if len(parts) > 1 else "")
        if instr not in CHANGE_COMMANDS:
            raise InvalidArgument(f"{parts[0]} is not a valid change command", obj=change)
        if not rest:
            raise InvalidArgument(f"{instr} requires an argument", obj=change)
        if instr in ("CMD", "ENTRYPOINT"):
            c["Cmd" if instr == "CMD" else "Entrypoint"] = _exec_form(rest)
        elif instr == "ENV":
            env = list(c.get("Env") or [])
            first = rest.split(None, 1)
            pairs = (
                [tuple(w.split("=", 1)) for w in shlex.split(rest)]
                if "=" in first[0]
                else [(first[0], first[1] if len(first) > 1 else "")]
            )
            for pair in pairs:
                if len(pair) != 2:
                    raise InvalidArgument(f"ENV names must be followed by =value: {change!r}")
                key, value = pair
                env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
            c["Env"] = env
        elif instr == "LABEL":
            labels = dict(c.get("Labels") or {})
            for word in shlex.split(rest):
                key, sep, value = word.partition("=")
                if not sep:
                    raise InvalidArgument(f"LABEL must be key=value: {change!r}", obj=change)
                labels[key] = value
            c["Labels"] = labels
        elif instr == "EXPOSE":
            ports = dict(c.get("ExposedPorts") or {})
            for p in rest.split():
                ports[p if "/" in p else f"{p}/tcp"] = {}
            c["ExposedPorts"] = ports
        elif instr == "VOLUME":
            vols = dict(c.get("Volumes") or {})
            paths = _exec_form(rest) if rest.startswith("[") else rest.split()
            if paths[:2] == ["/bin/sh", "-c"]:
                paths = rest.split()
            for v in paths:
                vols[v] = {}
            c["Volumes"] = vols
        elif instr == "WORKDIR":
            c["WorkingDir"] = rest
        elif instr == "USER":
            c["User"] = rest
        elif instr == "STOPSIGNAL":
            c["StopSignal"] = rest


def import_rootfs(
    store: ImageStore,
    stream: BinaryIO,
    ref: str | None = None,
    changes: Sequence[str] = (),
    message: str = "",
) -> ImageRecord:
    """``docker import``: a rootfs tar (plain or gzip) becomes a one-layer image."""
    if ref is not None:
        refs.parse_reference(ref)  # fail before copying the whole stream
    created = now_rfc3339()
    comment = message or "Imported from -"
    config: dict = {"created": created, "config": {}, "comment": comment}
    apply_changes(config, changes)
    config["history"] = [{"created": created, "created_by": "", "comment": comment}]
    return store.add_image([stream], config, [ref] if ref else [])


# -- load ---------------------------------------------------------------------------------------


def _member(staging: Path, rel: str) -> Path:
    """A path named by the archive, confined to the archive."""
    if not isinstance(rel, str) or not rel or rel.startswith("/"):
        raise InvalidArgument(f"invalid archive: bad path {rel!r}", obj=str(rel))
    p = (staging / rel).resolve()
    if not p.is_relative_to(staging.resolve()):
        raise InvalidArgument(f"invalid archive: path {rel!r} leaves the archive", obj=rel)
    if not p.is_file():
        raise InvalidArgument(f"invalid archive: {rel} is missing", obj=rel)
    return p


def _blob_file(staging: Path, digest: str) -> Path:
    check_digest(digest)
    return _member(staging, "blobs/sha256/" + digest[len("sha256:") :])


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_bytes())
    except ValueError as e:
        raise InvalidArgument(f"invalid archive: {what} is not valid JSON: {e}", obj=what) from None


@contextlib.contextmanager
def _staged(store: ImageStore, stream: BinaryIO) -> Iterator[Path]:
    """Unpack the (possibly gzip'd) archive into a private directory in the store."""
    store.blobs.ensure_dirs()
    staging = store.blobs.tmp / f"load-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        try:
            with decompressed(stream) as plain, tarfile.open(fileobj=plain, mode="r|") as tar:
                # The "data" filter refuses absolute names, ".." and links
                # leaving the directory, and drops devices and modes we do not want.
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise InvalidArgument(f"invalid archive: {e}") from None
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _put_verified(store: ImageStore, staging: Path, desc: dict) -> None:
    digest = check_digest(desc.get("digest", ""))
    path = _blob_file(staging, digest)
    size = desc.get("size")
    with open(path, "rb") as f:
        store.blobs.put_stream(
            f, expected=digest, expected_size=size if isinstance(size, int) else None
        )


def _verified_json(staging: Path, desc: dict) -> tuple[bytes, dict]:
    digest = check_digest(desc.get("digest", ""))
    data = _blob_file(staging, digest).read_bytes()
    if sha256_bytes(data) != digest:
        raise InvalidArgument(
            f"blob {digest} failed verification: content has digest {sha256_bytes(data)}",
            obj=digest,
        )
    try:
        return data, json.loads(data)
    except ValueError as e:
        raise InvalidArgument(f"blob {digest} is not valid JSON: {e}", obj=digest) from None


def _names_from_annotations(desc: dict) -> list[str]:
    ann = desc.get("annotations") or {}
    name = ann.get(ANNOT_CONTAINERD_NAME)
    if not name:
        # In a plain OCI layout ref.name is often only a tag ("latest"); only
        # something that looks like a repository reference names the image.
        ref_name = ann.get(ANNOT_REF_NAME, "")
        if any(ch in ref_name for ch in ":/@"):
            name = ref_name
    if not name:
        return []
    try:
        ref = refs.parse_reference(name)
    except InvalidArgument:
        return []
    return [] if ref.digest else [str(ref)]


def _platform_ok(desc: dict) -> bool:
    plat = desc.get("platform")
    return not plat or (plat.get("os") == "linux" and plat.get("architecture") == HOST_ARCH)


Loaded = list[tuple[ImageRecord, list[str]]]  # each image with the names the archive gave it


def _load_oci(store: ImageStore, staging: Path, legacy_tags: dict[str, list[str]]) -> Loaded:
    index = _read_json(_member(staging, "index.json"), "index.json")
    if not isinstance(index, dict):
        raise InvalidArgument("invalid archive: index.json is not an object")
    loaded: Loaded = []

    def visit(desc: dict, names: list[str], depth: int) -> None:
        if depth > 4:
            raise InvalidArgument("invalid archive: image indexes nested too deeply")
        media = desc.get("mediaType", "")
        data, doc = _verified_json(staging, desc)
        media = doc.get("mediaType", media) if isinstance(doc, dict) else media
        if media in INDEX_TYPES or (not media and "manifests" in doc):
            # An index saved from a multi-platform image may list platforms
            # whose content was not saved: take the first one that is here.
            candidates = [
                d
                for d in doc.get("manifests", [])
                if _platform_ok(d)
                and (staging / "blobs" / "sha256" / str(d.get("digest", ""))[7:]).is_file()
            ]
            if not candidates:
                raise InvalidArgument(f"no image for linux/{HOST_ARCH} in index {desc['digest']}")
            visit(candidates[0], names, depth + 1)
            return
        if media not in MANIFEST_TYPES and not (not media and "config" in doc):
            raise Unsupported(f"unsupported manifest media type {media!r} in {desc['digest']}")
        _put_verified(store, staging, doc["config"])
        for layer in doc.get("layers", []):
            _put_verified(store, staging, layer)
        config_digest = doc["config"]["digest"]
        tags = names or legacy_tags.get(config_digest, [])
        loaded.append((store.register_manifest(data, tags), tags))

    for desc in index.get("manifests", []):
        visit(desc, _names_from_annotations(desc), 0)
    return loaded


def _legacy_tags(staging: Path) -> dict[str, list[str]]:
    """config digest -> RepoTags, from manifest.json when the config is named by digest."""
    path = staging / "manifest.json"
    if not path.is_file():
        return {}
    out: dict[str, list[str]] = {}
    for entry in _read_json(path, "manifest.json") or []:  # type: ignore[union-attr]
        cfg = Path(str(entry.get("Config", ""))).name.removesuffix(".json")
        if len(cfg) == 64:
            out["sha256:" + cfg] = [
                str(refs.parse_reference(t)) for t in entry.get("RepoTags") or []
            ]
    return out


def _load_docker(store: ImageStore, staging: Path) -> Loaded:
    """The ``docker save`` format before Docker 25: manifest.json + <id>.json + <dir>/layer.tar."""
    manifest_list = _read_json(_member(staging, "manifest.json"), "manifest.json")
    if not isinstance(manifest_list, list):
        raise InvalidArgument("invalid archive: manifest.json is not a list")
    loaded = []
    for entry in manifest_list:
        config_path = _member(staging, entry.get("Config", ""))
        config_bytes = config_path.read_bytes()
        config_digest = sha256_bytes(config_bytes)
        # The config's file name is its digest: a mismatch means tampering.
        named = config_path.name.removesuffix(".json")
        if len(named) == 64 and "sha256:" + named != config_digest:
            raise InvalidArgument(
                f"image config sha256:{named} failed verification: content has digest {config_digest}",
                obj="sha256:" + named,
            )
        store.blobs.put_bytes(config_bytes, expected=config_digest)
        try:
            config = json.loads(config_bytes)
            diff_ids = list(config["rootfs"]["diff_ids"])
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidArgument(f"invalid image config {config_digest}: {e}") from None
        layer_paths = entry.get("Layers") or []
        if len(layer_paths) != len(diff_ids):
            raise InvalidArgument(
                f"image {config_digest}: {len(layer_paths)} layers in manifest.json, "
                f"{len(diff_ids)} in its config",
                obj=config_digest,
            )
        layers = []
        for rel, diff_id in zip(layer_paths, diff_ids, strict=True):
            check_digest(diff_id)
            try:
                with open(_member(staging, rel), "rb") as f, decompressed(f) as plain:
                    # Stored uncompressed, so the blob's digest must be the diff ID.
                    digest, size = store.blobs.put_stream(plain, expected=diff_id)
            except (EOFError, OSError, zlib.error) as e:
                raise InvalidArgument(f"invalid archive: layer {rel}: {e}", obj=rel) from None
            layers.append(Descriptor(MT_OCI_LAYER, digest, size).to_json())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": Descriptor(MT_OCI_CONFIG, config_digest, len(config_bytes)).to_json(),
            "layers": layers,
        }
        tags = [str(refs.parse_reference(t)) for t in entry.get("RepoTags") or []]
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        loaded.append((store.register_manifest(manifest_bytes, tags), tags))
    return loaded


def load(store: ImageStore, stream: BinaryIO) -> list[str]:
    """``docker load``: returns what was loaded, one string per image name
    (``busybox:latest``) or, for an image without a name, its ID
    (``sha256:...``) — the CLI prints "Loaded image: X" / "Loaded image ID: X"."""
    with store.writing(), _staged(store, stream) as staging:
        if (staging / "index.json").is_file():
            records = _load_oci(store, staging, _legacy_tags(staging))
        elif (staging / "manifest.json").is_file():
            records = _load_docker(store, staging)
        elif (staging / "repositories").is_file():
            raise Unsupported(
                "legacy (pre-Docker 1.10) image archives without manifest.json are not supported"
            )
        else:
            raise InvalidArgument(
                "invalid archive: no index.json or manifest.json (not a docker save / OCI layout)"
            )
    named: dict[str, list[str]] = {}
    for rec, tags in records:
        names = named.setdefault(rec.id, [])
        names.extend(refs.parse_reference(t).familiar() for t in tags)
    out: list[str] = []
    for image_id, names in named.items():
        out.extend(n for n in (sorted(set(names)) or [image_id]) if n not in out)
    return out


# -- save ---------------------------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)


def _select(store: ImageStore, text: str) -> list[tuple[ImageRecord, list[str]]]:
    """The images and names an argument of ``save`` stands for: an ID saves the
    image without names, ``repo:tag`` that tag, a bare ``repo`` every tag of the
    repository (as ``docker save busybox`` does)."""
    try:
        ref = refs.parse_reference(text, default_tag=False)
    except InvalidArgument:
        ref = None
    if ref is not None and not ref.tagged_or_digested():
        found = []
        for rec in store.list(all=True):
            names = [str(r) for r in map(refs.parse_reference, rec.repo_tags) if r.name == ref.name]
            if names:
                found.append((rec, names))
        if found:
            return found
    rec, matched = store.resolve(text)
    if matched is None or (ref is not None and ref.digest):
        return [(rec, [])]
    return [(rec, [matched])]


def save(store: ImageStore, image_refs: Sequence[str], out: BinaryIO) -> None:
    """``docker save``: Docker 25's layout, which old and new ``docker load`` read:
    an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256``) plus
    ``manifest.json`` and ``repositories`` pointing at the same blobs."""
    if not image_refs:
        raise InvalidArgument("save needs at least one image")
    images: dict[str, tuple[ImageRecord, list[str]]] = {}
    for text in image_refs:
        for rec, selected in _select(store, text):
            _, names = images.setdefault(rec.id, (rec, []))
            names.extend(n for n in selected if n not in names)
    tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
    try:
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        written: set[str] = set()
        index_entries, manifest_json, repositories = [], [], {}
        for rec, names in images.values():
            manifest_bytes = store.blobs.read(rec.manifest_digest)
            manifest = json.loads(manifest_bytes)
            for digest in [rec.manifest_digest, rec.id, *rec.layer_digests]:
                if digest in written:
                    continue
                path = store.blobs.path(digest)
                if not path.is_file():
                    raise NotFound(f"blob {digest} of image {rec.id} is missing", obj=digest)
                info = tar.gettarinfo(str(path), arcname=f"blobs/sha256/{digest[7:]}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode, info.mtime = 0o644, 0
                with open(path, "rb") as f:
                    tar.addfile(info, f)
                written.add(digest)
            desc = {
                "mediaType": manifest.get("mediaType", MT_OCI_MANIFEST),
                "digest": rec.manifest_digest,
                "size": len(manifest_bytes),
            }
            for name in names or [None]:
                entry = dict(desc)
                if name:
                    ref = refs.parse_reference(name)
                    entry["annotations"] = {
                        ANNOT_CONTAINERD_NAME: str(ref),
                        ANNOT_REF_NAME: ref.tag,
                    }
                    repo = repositories.setdefault(ref.familiar_name, {})
                    if rec.layer_digests:
                        repo[ref.tag] = rec.layer_digests[-1][7:]
                index_entries.append(entry)
            manifest_json.append(
                {
                    "Config": f"blobs/sha256/{rec.id[7:]}",
                    "RepoTags": [refs.parse_reference(n).familiar() for n in names] or None,
                    "Layers": [f"blobs/sha256/{d[7:]}" for d in rec.layer_digests],
                }
            )
        index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": index_entries}
        _add_bytes(tar, "index.json", json.dumps(index, separators=(",", ":")).encode())
        _add_bytes(tar, "manifest.json", json.dumps(manifest_json, separators=(",", ":")).encode())
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        if repositories:
            _add_bytes(
                tar, "repositories", json.dumps(repositories, separators=(",", ":")).encode()
            )
    finally:
        tar.close()
