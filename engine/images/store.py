"""The image store: OCI manifests and configs over content-addressed blobs,
tags in one index file, layers unpacked once per chain ID.

Layout under ``images_dir``::

    blobs/sha256/<hex>      manifests, configs, layer tars (content-addressed)
    layers/<chain hex>/     diff/ (overlay lowerdir) + meta.json
    index.json              images (ID -> manifest), tags and repo digests
    tmp/                    staging for blobs

The image ID is the digest of the config blob, as in Docker, so the same
content gives the same ID on every host. ``index.json`` is replaced
atomically under ``images.lock``; readers take no lock. Anything that writes
blobs or layers holds ``images-gc.lock`` shared so garbage collection
(exclusive) never deletes content that is about to be referenced.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import platform
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from engine.errors import Conflict, InvalidArgument, NotFound
from engine.images import reference as refs
from engine.images.content import (
    BlobStore,
    Descriptor,
    chain_ids,
    check_digest,
    decompressed,
)
from engine.images.layerstore import LayerInfo, LayerStore
from engine.locks import file_lock

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
HOST_ARCH = _GOARCH.get(platform.machine(), platform.machine())

LayerSource = Path | str | BinaryIO | bytes
InUse = Callable[[str], list[str]]
# image ID -> [(container ID, running)] of the containers using it.
UsersDetail = Callable[[str], list[tuple[str, bool]]]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """RFC 3339 (Go's nanosecond form too) -> epoch seconds; 0 when absent/invalid."""
    if not text:
        return 0.0
    s = text.replace("Z", "+00:00")
    if "." in s:  # Python 3.11 accepts at most 6 fractional digits
        head, _, rest = s.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        s = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return 0.0
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True)
class ImageRecord:
    id: str  # "sha256:<hex>" = digest of the config blob
    manifest_digest: str
    repo_tags: tuple[str, ...]  # familiar form: "busybox:latest"
    repo_digests: tuple[str, ...]  # familiar form: "busybox@sha256:..."
    created: str
    size: int
    diff_ids: tuple[str, ...]
    chain_ids: tuple[str, ...]
    layer_digests: tuple[str, ...]  # blob digests, as in the manifest
    config: dict = field(compare=False, hash=False)  # the whole image config JSON
    parent: str = ""
    removed: bool = False  # deleted with -f while containers use it; kept for them
    last_tag_time: str = ""

    @property
    def short_id(self) -> str:
        return self.id[len("sha256:") :][:12]

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.config.get("config") or {}).get("Labels") or {})

    @property
    def dangling(self) -> bool:
        return not self.repo_tags and not self.repo_digests


@dataclass(frozen=True)
class HistoryEntry:
    id: str  # the image ID on the top entry, "<missing>" below (like Docker)
    created: str
    created_by: str
    size: int
    comment: str
    tags: tuple[str, ...] = ()
    empty_layer: bool = False


@dataclass(frozen=True)
class ImageUsage:
    """One row of ``system df -v``'s images section."""

    id: str
    repo_tags: tuple[str, ...]
    created: str
    size: int
    shared_size: int  # layers also used by another image
    unique_size: int
    containers: int = 0


@dataclass(frozen=True)
class GcReport:
    blobs_removed: tuple[str, ...] = ()
    layers_removed: tuple[str, ...] = ()
    bytes_freed: int = 0


class ImageStore:
    def __init__(self, images_dir: Path, locks_dir: Path):
        self.root = Path(images_dir)
        self.locks_dir = Path(locks_dir)
        self.blobs = BlobStore(self.root)
        self.layers = LayerStore(self.root, self.locks_dir, self.blobs)
        self.index_path = self.root / "index.json"
        self._lock_path = self.locks_dir / "images.lock"
        self._gc_lock_path = self.locks_dir / "images-gc.lock"

    # Index ------------------------------------------------------------------
    def _read_index(self) -> dict:
        try:
            data = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            data = {}
        data.setdefault("version", 1)
        data.setdefault("images", {})
        data.setdefault("tags", {})
        data.setdefault("digests", {})
        return data

    def _write_index(self, data: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".index.json.tmp-{uuid.uuid4().hex}"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.index_path)

    @contextlib.contextmanager
    def _edit_index(self) -> Iterator[dict]:
        """Read-modify-write of index.json under the store lock."""
        with file_lock(self._lock_path):
            data = self._read_index()
            yield data
            self._write_index(data)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold while adding content, so GC cannot delete it before it is indexed."""
        with file_lock(self._gc_lock_path, shared=True):
            yield

    # Records ----------------------------------------------------------------
    def _record(self, image_id: str, index: dict) -> ImageRecord:
        entry = index["images"][image_id]
        manifest = json.loads(self.blobs.read(entry["manifest"]))
        config = json.loads(self.blobs.read(image_id))
        diff_ids = tuple((config.get("rootfs") or {}).get("diff_ids") or [])
        chains = tuple(chain_ids(list(diff_ids)))
        size = 0
        for c in chains:
            info = self.layers.get(c)
            size += info.size if info else 0
        tags = sorted(
            refs.parse_reference(t).familiar() for t, i in index["tags"].items() if i == image_id
        )
        digests = sorted(
            refs.parse_reference(d).familiar() for d, i in index["digests"].items() if i == image_id
        )
        return ImageRecord(
            id=image_id,
            manifest_digest=entry["manifest"],
            repo_tags=tuple(tags),
            repo_digests=tuple(digests),
            created=config.get("created") or "",
            size=size,
            diff_ids=diff_ids,
            chain_ids=chains,
            layer_digests=tuple(d["digest"] for d in manifest.get("layers", [])),
            config=config,
            parent=entry.get("parent", ""),
            removed=bool(entry.get("removed")),
            last_tag_time=entry.get("last_tag_time", ""),
        )

    def _resolve(self, text: str, index: dict) -> tuple[str, str | None]:
        """-> (image ID, the canonical reference matched or None when found by ID)."""
        images = index["images"]
        live = {i for i, e in images.items() if not e.get("removed")}
        if refs.is_full_id(text):
            image_id = "sha256:" + refs.id_hex(text)
            if image_id in live:
                return image_id, None
            raise NotFound(f"No such image: {text}", obj=text)
        parse_error: InvalidArgument | None = None
        try:
            ref = refs.parse_reference(text)
        except InvalidArgument as e:
            ref, parse_error = None, e
        if ref is not None:
            if ref.digest:
                canon = f"{ref.name}@{ref.digest}"
                image_id = index["digests"].get(canon)
                if image_id is None:
                    # A locally built image has no recorded repo digest, but
                    # name@<manifest digest> should still find it.
                    for i in live:
                        if images[i]["manifest"] == ref.digest and any(
                            refs.parse_reference(t).name == ref.name
                            for t, j in index["tags"].items()
                            if j == i
                        ):
                            image_id = i
                if image_id in live:
                    # Found through the manifest digest, not a stored reference:
                    # there is nothing to untag, so report it like an ID match.
                    return image_id, canon if canon in index["digests"] else None
            else:
                canon = str(ref)
                image_id = index["tags"].get(canon)
                if image_id in live:
                    return image_id, canon
        if refs.looks_like_id_prefix(text):
            prefix = "sha256:" + refs.id_hex(text)
            matches = sorted(i for i in live if i.startswith(prefix))
            if len(matches) == 1:
                return matches[0], None
            if len(matches) > 1:
                raise InvalidArgument(
                    f"ambiguous image ID prefix {text!r}: matches "
                    + ", ".join(m[7:19] for m in matches),
                    obj=text,
                )
        if parse_error is not None:
            raise parse_error
        raise NotFound(f"No such image: {text}", obj=text)

    def get(self, ref_or_id: str) -> ImageRecord:
        index = self._read_index()
        image_id, _ = self._resolve(ref_or_id, index)
        return self._record(image_id, index)

    def resolve(self, ref_or_id: str) -> tuple[ImageRecord, str | None]:
        """Like ``get``, and also which canonical reference matched (None when
        found by ID): ``rmi`` and ``save`` act differently on names and IDs."""
        index = self._read_index()
        image_id, matched = self._resolve(ref_or_id, index)
        return self._record(image_id, index), matched

    def get_by_id(self, image_id: str, *, include_removed: bool = True) -> ImageRecord:
        """Exact-ID lookup for containers, which must find their image even after
        ``rmi -f`` (the record stays, hidden, until no container uses it)."""
        index = self._read_index()
        image_id = "sha256:" + refs.id_hex(image_id)
        entry = index["images"].get(image_id)
        if entry is None or (entry.get("removed") and not include_removed):
            raise NotFound(f"No such image: {image_id}", obj=image_id)
        return self._record(image_id, index)

    def exists(self, ref_or_id: str) -> bool:
        try:
            self.get(ref_or_id)
        except (NotFound, InvalidArgument):
            return False
        return True

    # Adding images ------------------------------------------------------------
    def add_image(
        self,
        layers: Sequence[LayerSource],
        config: Mapping,
        tags: Iterable[str] = (),
        *,
        parent: str = "",
    ) -> ImageRecord:
        """Create an image from layer tars (paths, streams or bytes; plain or
        gzip) and an image config (``rootfs`` is filled in here; ``created``,
        ``architecture``, ``os`` and ``history`` get defaults if missing)."""
        with self.writing():
            diff_ids: list[str] = []
            descriptors: list[Descriptor] = []
            for src in layers:
                # Stored uncompressed: digest == diff ID, and `save` writes
                # what `docker save` writes.
                with _open_source(src) as raw, decompressed(raw) as plain:
                    digest, size = self.blobs.put_stream(plain)
                diff_ids.append(digest)
                descriptors.append(Descriptor(MT_OCI_LAYER, digest, size))
            cfg = copy.deepcopy(dict(config))
            cfg.setdefault("created", now_rfc3339())
            cfg.setdefault("architecture", HOST_ARCH)
            cfg.setdefault("os", "linux")
            cfg.setdefault("config", {})
            cfg["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
            history = cfg.get("history")
            if not history:
                cfg["history"] = [{"created": cfg["created"], "created_by": ""} for _ in diff_ids]
            elif sum(1 for h in history if not h.get("empty_layer")) != len(diff_ids):
                raise InvalidArgument(
                    f"image config history has {len(history)} entries with layers "
                    f"for {len(diff_ids)} layers"
                )
            config_bytes = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
            config_digest = self.blobs.put_bytes(config_bytes)
            manifest = {
                "schemaVersion": 2,
                "mediaType": MT_OCI_MANIFEST,
                "config": Descriptor(MT_OCI_CONFIG, config_digest, len(config_bytes)).to_json(),
                "layers": [d.to_json() for d in descriptors],
            }
            manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
            return self._register(manifest_bytes, tags, (), parent)

    def register_manifest(
        self,
        manifest_bytes: bytes,
        tags: Iterable[str] = (),
        repo_digests: Iterable[str] = (),
        *,
        parent: str = "",
    ) -> ImageRecord:
        """Index an image whose config and layer blobs are already in the store
        (put there by ``blobs.put_stream(..., expected=digest)``): used by load
        and pull, which must keep the manifest byte for byte."""
        with self.writing():
            return self._register(manifest_bytes, tags, repo_digests, parent)

    def _register(
        self, manifest_bytes: bytes, tags: Iterable[str], repo_digests: Iterable[str], parent: str
    ) -> ImageRecord:
        try:
            manifest = json.loads(manifest_bytes)
            config_digest = check_digest(manifest["config"]["digest"])
            layer_descs = manifest.get("layers") or []
            layer_digests = [check_digest(d["digest"]) for d in layer_descs]
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidArgument(f"invalid image manifest: {e}") from e
        if manifest.get("mediaType", MT_OCI_MANIFEST) not in MANIFEST_TYPES:
            raise InvalidArgument(f"unsupported manifest media type {manifest.get('mediaType')!r}")
        config = json.loads(self.blobs.read(config_digest))
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(layer_digests):
            raise InvalidArgument(
                f"image {config_digest}: config lists {len(diff_ids)} layers, manifest {len(layer_digests)}",
                obj=config_digest,
            )
        for d in layer_digests:
            if not self.blobs.has(d):
                raise NotFound(f"layer blob {d} is missing from the image store", obj=d)
        for chain, diff_id, blob in zip(chain_ids(diff_ids), diff_ids, layer_digests, strict=True):
            self.layers.ensure(chain, check_digest(diff_id), blob)
        manifest_digest = self.blobs.put_bytes(manifest_bytes)
        canon_tags = [_canonical_tag(t) for t in tags]
        canon_digests = [_canonical_digest(d, manifest_digest) for d in repo_digests]
        with self._edit_index() as index:
            entry = index["images"].setdefault(config_digest, {"added": now_rfc3339()})
            entry["manifest"] = manifest_digest
            entry.pop("removed", None)
            if parent:
                entry["parent"] = parent
            for t in canon_tags:
                index["tags"][t] = config_digest
                entry["last_tag_time"] = now_rfc3339()
            for d in canon_digests:
                index["digests"][d] = config_digest
            return self._record(config_digest, index)

    # Tags -------------------------------------------------------------------
    def tag(self, src: str, new_ref: str) -> ImageRecord:
        canon = _canonical_tag(new_ref)
        with self._edit_index() as index:
            image_id, _ = self._resolve(src, index)
            index["tags"][canon] = image_id
            index["images"][image_id]["last_tag_time"] = now_rfc3339()
            return self._record(image_id, index)

    def untag(self, ref: str) -> None:
        canon = _canonical_tag(ref)
        with self._edit_index() as index:
            if index["tags"].pop(canon, None) is None:
                raise NotFound(f"No such image: {ref}", obj=ref)

    # Removal ------------------------------------------------------------------
    def remove(
        self,
        ref_or_id: str,
        *,
        force: bool = False,
        in_use: InUse | None = None,
        users_detail: UsersDetail | None = None,
    ) -> list[str]:
        """``docker rmi`` for one argument; returns Docker's report lines
        (``Untagged: busybox:latest``, ``Deleted: sha256:...``).

        - by name: removes that reference; the image goes too only if it was the last
          (refused without force if a container uses the image);
        - by ID: with several repositories tagged, needs ``force`` (then untags all);
        - used by containers (``in_use(image_id)`` -> their names): refused unless
          ``force``; with force the record is hidden but kept, with its layers,
          until no container uses it (``gc(in_use)`` then drops it);
        - images with child images are never deleted;
        - ``users_detail(image_id)`` -> [(container ID, running)] names containers as
          Docker does and applies its rule for running ones: an image a running
          container uses is never deleted, even with force (a forced untag of its
          last tag leaves it as <none>).
        """
        in_use = in_use or (lambda _id: [])
        lines: list[str] = []
        deleted_id = None
        with self._edit_index() as index:
            image_id, matched = self._resolve(ref_or_id, index)
            chains = self._record(image_id, index).chain_ids
            short = image_id[7:19]
            detail = list(users_detail(image_id)) if users_detail else []
            users = [cid[:12] for cid, _ in detail] or list(in_use(image_id))
            running = [cid[:12] for cid, up in detail if up]
            stopped = [cid[:12] for cid, up in detail if not up]
            children = [
                i
                for i, e in index["images"].items()
                if e.get("parent") == image_id and not e.get("removed")
            ]

            def refs_of() -> list[str]:
                return sorted(
                    r for m in ("tags", "digests") for r, i in index[m].items() if i == image_id
                )

            quiet = False
            if matched is not None:
                if not force and len(refs_of()) == 1 and users:
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{ref_or_id}" (must force) '
                        f"- container {users[0]} is using its referenced image {short}",
                        obj=ref_or_id,
                    )
                self._drop_ref(index, matched, lines)
                repo = refs.parse_reference(matched, default_tag=False).name
                # The last tag of a repository gone: its digest references go too (Docker).
                if not any(
                    refs.parse_reference(t).name == repo
                    for t in index["tags"]
                    if index["tags"][t] == image_id
                ):
                    for d in [d for d, i in index["digests"].items() if i == image_id]:
                        if refs.parse_reference(d, default_tag=False).name == repo:
                            self._drop_ref(index, d, lines)
                if refs_of() or running:
                    return lines  # a running container's image stays, as <none>
                quiet = True
            elif running:  # by ID: force or not (Docker's rule)
                raise Conflict(
                    f"conflict: unable to delete {short} (cannot be forced) - image is being used"
                    f" by running container {running[0]}",
                    obj=ref_or_id,
                )
            elif len({refs.parse_reference(r, default_tag=False).name for r in refs_of()}) <= 1:
                if children:
                    raise Conflict(
                        f"conflict: unable to delete {short} (cannot be forced) - image has dependent child images",
                        obj=ref_or_id,
                    )
                if users and not force:
                    who = f"stopped container {stopped[0]}" if stopped else f"container {users[0]}"
                    raise Conflict(
                        f"conflict: unable to delete {short} (must be forced) - image is being used by "
                        f"{who}",
                        obj=ref_or_id,
                    )
                for r in refs_of():
                    self._drop_ref(index, r, lines)
            if children:
                if quiet:
                    return lines
                raise Conflict(
                    f"conflict: unable to delete {short} (cannot be forced) - image has dependent child images",
                    obj=ref_or_id,
                )
            if not force and refs_of():
                raise Conflict(
                    f"conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories",
                    obj=ref_or_id,
                )
            for r in refs_of():
                self._drop_ref(index, r, lines)
            if users:
                index["images"][image_id]["removed"] = True
            else:
                del index["images"][image_id]
                deleted_id = image_id
            lines.append(f"Deleted: {image_id}")
        if deleted_id is not None:
            report = self.gc(in_use=None, timeout=5.0)
            if report is not None:
                # Docker also lists the layers that went with the image, top first.
                gone = set(report.layers_removed)
                lines.extend(f"Deleted: {c}" for c in reversed(chains) if c in gone)
        return lines

    @staticmethod
    def _drop_ref(index: dict, canon: str, lines: list[str]) -> None:
        index["tags"].pop(canon, None)
        index["digests"].pop(canon, None)
        lines.append(f"Untagged: {refs.parse_reference(canon, default_tag=False).familiar()}")

    def gc(self, in_use: InUse | None = None, *, timeout: float | None = None) -> GcReport | None:
        """Delete blobs and unpacked layers no image references, and staging
        leftovers; with ``in_use``, first drop hidden (force-removed) images no
        container uses any more. Returns None if ``timeout`` passed while other
        processes were adding content (the next GC will catch up)."""
        try:
            with file_lock(self._gc_lock_path, timeout=timeout):
                return self._gc_locked(in_use)
        except Conflict:
            return None

    def _gc_locked(self, in_use: InUse | None) -> GcReport:
        with self._edit_index() as index:
            if in_use is not None:
                for image_id in [i for i, e in index["images"].items() if e.get("removed")]:
                    if not in_use(image_id):
                        del index["images"][image_id]
            keep_blobs: set[str] = set()
            keep_layers: set[str] = set()
            for image_id, entry in index["images"].items():
                keep_blobs |= {image_id, entry["manifest"]}
                with contextlib.suppress(NotFound, ValueError, KeyError):
                    manifest = json.loads(self.blobs.read(entry["manifest"]))
                    keep_blobs |= {d["digest"] for d in manifest.get("layers", [])}
                    config = json.loads(self.blobs.read(image_id))
                    keep_layers |= set(chain_ids(config["rootfs"]["diff_ids"]))
        freed = 0
        blobs_removed = []
        for d in list(self.blobs.digests()):
            if d not in keep_blobs:
                freed += self.blobs.delete(d)
                blobs_removed.append(d)
        layers_removed = []
        for c in self.layers.chain_ids_on_disk():
            if c not in keep_layers:
                info = self.layers.get(c)
                freed += info.size if info else 0
                self.layers.remove(c)
                layers_removed.append(c)
        self.layers.remove_stale_tmp()
        if self.blobs.tmp.is_dir():
            for p in self.blobs.tmp.iterdir():
                with contextlib.suppress(OSError):
                    p.unlink()
        return GcReport(tuple(blobs_removed), tuple(layers_removed), freed)

    # Queries ------------------------------------------------------------------
    def layer_dirs(self, image: ImageRecord | str) -> list[Path]:
        """The image's ``diff`` directories, lowest first (overlay lists lowerdir
        top first, so reverse them there). Missing layers are unpacked again."""
        rec = (
            image
            if isinstance(image, ImageRecord)
            else self.get_by_id(image)
            if refs.is_full_id(image)
            else self.get(image)
        )
        return [i.path for i in self.layer_infos(rec)]

    def layer_infos(self, rec: ImageRecord) -> list[LayerInfo]:
        out = []
        for chain, diff_id, blob in zip(
            rec.chain_ids, rec.diff_ids, rec.layer_digests, strict=True
        ):
            info = self.layers.get(chain)
            if info is None:
                with self.writing():
                    info = self.layers.ensure(chain, diff_id, blob)
            out.append(info)
        return out

    def list(
        self, all: bool = False, filters: Mapping[str, str | Iterable[str]] | None = None
    ) -> list[ImageRecord]:
        """Images newest first. Without ``all``, untagged intermediate images
        (parents of other images) are hidden, as in ``docker images``."""
        from engine.images.query import apply_filters

        index = self._read_index()
        records = [
            self._record(i, index) for i, e in index["images"].items() if not e.get("removed")
        ]
        if not all:
            parents = {r.parent for r in records if r.parent}
            records = [r for r in records if not (r.dangling and r.id in parents)]
        records = apply_filters(self, records, filters or {})
        return sorted(records, key=lambda r: (parse_time(r.created), r.id), reverse=True)

    def history(self, ref: str) -> list[HistoryEntry]:
        from engine.images.query import history

        return history(self, self.get(ref))

    def inspect(self, ref: str) -> dict:
        from engine.images.query import inspect

        return inspect(self, self.get(ref))

    def sizes(self, in_use: InUse | None = None) -> list[ImageUsage]:
        from engine.images.query import sizes

        return sizes(self, self.list(all=True), in_use)


@contextlib.contextmanager
def _open_source(src: LayerSource) -> Iterator[BinaryIO]:
    if isinstance(src, bytes):
        yield io.BytesIO(src)
    elif isinstance(src, (str, Path)):
        with open(src, "rb") as f:
            yield f
    else:
        yield src


def _canonical_tag(text: str) -> str:
    ref = refs.parse_reference(text)
    if ref.digest:
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {text}", obj=text)
    return str(ref)


def _canonical_digest(text: str, manifest_digest: str) -> str:
    """``repo`` or ``repo@digest`` -> canonical ``name@digest`` (the manifest's)."""
    ref = refs.parse_reference(text, default_tag=False)
    return f"{ref.name}@{ref.digest or manifest_digest}"
