"""``push``: the config and layer blobs, then the manifest.

For each blob, cheapest first:

1. ``HEAD`` in the target repository: already there ("Layer already exists");
2. a cross-repository mount (``POST .../blobs/uploads/?mount=<digest>&from=<repo>``)
   from a repository on the same registry known to hold it ("Mounted from");
3. an upload ("Pushed").

Layers stored uncompressed (built or imported here: digest = diff ID) are
gzip-compressed on the way out, as Docker and Podman push them, streamed
straight into a chunked upload (compressed, hashed and sent in one pass).
gzip output here is deterministic (no name, no time), and the compressed
digest is remembered (blobinfo.py), so a second push of the same layer is a
``HEAD`` and no compression at all. Layers pulled from a registry are pushed
as they are, so a pulled image keeps its manifest digest. ``--compression-format
none`` pushes every layer as stored.

After a push the image records ``name@<pushed manifest digest>`` as a repo
digest, as Docker does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zlib
from dataclasses import dataclass, field

from engine.errors import EngineError, InvalidArgument
from engine.images import reference as refs
from engine.images.content import sha256_bytes
from engine.images.store import ImageRecord, ImageStore
from engine.registry import manifests as mf
from engine.registry.blobinfo import BlobInfoCache
from engine.registry.client import RegistryClient, push_scope
from engine.registry.errors import RegistryError, Unauthorized
from engine.registry.parallel import run_all
from engine.registry.progress import Progress, short_id

CHUNK = 1 << 20
DEFAULT_CONCURRENCY = 5  # Docker's max-concurrent-uploads
GZIP_LEVEL = 6  # gzip's (and Docker's, Podman's) default
COMPRESSIONS = ("gzip", "none")
EXISTS = "Layer already exists"
_GZIP_OF = {mf.MT_OCI_LAYER: mf.MT_OCI_LAYER_GZIP, mf.MT_DOCKER_LAYER: mf.MT_DOCKER_LAYER_GZIP}


@dataclass
class PushResult:
    reference: str
    tag: str
    digest: str
    size: int
    layers: list[dict] = field(default_factory=list)
    uploaded: int = 0

    def to_dict(self) -> dict:
        return {
            "Reference": self.reference,
            "Tag": self.tag,
            "Digest": self.digest,
            "Size": self.size,
            "Layers": self.layers,
            "Uploaded": self.uploaded,
        }


class _ProgressReader:
    """A file wrapper counting bytes as http.client reads them."""

    def __init__(self, f, report):
        self._f, self._report, self.count = f, report, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.count += len(data)
        self._report(self.count)
        return data


class Pusher:
    def __init__(
        self,
        store: ImageStore,
        client: RegistryClient,
        *,
        progress: Progress,
        blobinfo: BlobInfoCache | None = None,
        compression: str = "gzip",
        concurrency: int = DEFAULT_CONCURRENCY,
    ):
        if compression not in COMPRESSIONS:
            raise InvalidArgument(
                f"unsupported compression format {compression!r}: use gzip or none", obj=compression
            )
        self.store = store
        self.client = client
        self.progress = progress
        self.blobinfo = blobinfo
        self.compression = compression
        self.concurrency = max(1, concurrency)

    # One blob ------------------------------------------------------------------------------
    def _mount_sources(self, digest: str, ref: refs.Reference) -> list[str]:
        if self.blobinfo is None:
            return []
        return [
            repo
            for host, repo in self.blobinfo.locations(digest)
            if host == ref.domain and repo != ref.path
        ]

    def _try_existing(self, desc: dict, ref: refs.Reference) -> tuple[str, str | None]:
        """For a blob of known digest: (EXISTS, None) if the repository has it,
        ("Mounted from <repo>", None) after a mount, else ("", the Location of an
        upload a refused mount started, or None)."""
        repo, digest = ref.path, desc["digest"]
        if self.client.blob_exists(repo, digest, scopes=(push_scope(repo),)) is not None:
            return EXISTS, None
        location = None
        for source in self._mount_sources(digest, ref)[:3]:
            try:
                location = self.client.start_upload(repo, mount=digest, from_repo=source)
            except Unauthorized:
                continue  # no pull access to the source: upload instead
            if location is None:
                return f"Mounted from {source}", None
            break
        return "", location

    def _upload_file(
        self, desc: dict, ref: refs.Reference, location: str | None, sid: str | None
    ) -> int:
        repo, digest, size = ref.path, desc["digest"], desc["size"]
        if location is None:
            location = self.client.start_upload(repo)
        opened: list = []

        def body():
            for f in opened:
                f.close()
            f = self.store.blobs.open(digest)
            opened.append(f)
            if sid is None:  # the config: no progress line, as in Docker
                return f
            return _ProgressReader(f, lambda n: self.progress.bytes(sid, "Pushing", n, size))

        try:
            self.client.finish_upload(repo, location, digest, body=body, length=size)
        finally:
            for f in opened:
                f.close()
        return size

    def _upload_gzip(
        self, desc: dict, ref: refs.Reference, location: str | None, sid: str
    ) -> tuple[dict, int]:
        repo, local, total = ref.path, desc["digest"], desc["size"]
        if location is None:
            location = self.client.start_upload(repo)
        state: dict = {}

        def stream():
            h = hashlib.sha256()
            state.update(hash=h, size=0)
            co = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # gzip: no name, mtime 0
            done = 0
            with self.store.blobs.open(local) as f:
                while data := f.read(CHUNK):
                    done += len(data)
                    out = co.compress(data)
                    if out:
                        h.update(out)
                        state["size"] += len(out)
                        yield out
                    self.progress.bytes(sid, "Pushing", done, total)
            out = co.flush()
            h.update(out)
            state["size"] += len(out)
            yield out

        location = self.client.patch_upload(repo, location, lambda: stream())
        digest = "sha256:" + state["hash"].hexdigest()
        self.client.finish_upload(repo, location, digest)
        return _gzip_descriptor(desc, digest, state["size"]), state["size"]

    def _push_layer(self, desc: dict, ref: refs.Reference) -> tuple[dict, str, int]:
        """-> (descriptor as pushed, status, bytes uploaded)."""
        sid = short_id(desc["digest"])
        compress = self.compression == "gzip" and desc.get("mediaType", mf.MT_OCI_LAYER) in _GZIP_OF
        if compress:
            # A gzip form pushed before: maybe the registry has it already.
            location = None
            for known in self.blobinfo.compressed(desc["digest"]) if self.blobinfo else []:
                if location is not None:
                    self._cancel(location, ref)
                status, location = self._try_existing(known, ref)
                if status:
                    return _gzip_descriptor(desc, known["digest"], known["size"]), status, 0
            # An upload a failed mount started can take any content.
            new, sent = self._upload_gzip(desc, ref, location, sid)
            return new, "Pushed", sent
        status, location = self._try_existing(desc, ref)
        if status:
            return desc, status, 0
        return desc, "Pushed", self._upload_file(desc, ref, location, sid)

    def _cancel(self, location: str, ref: refs.Reference) -> None:
        """Drop an upload we will not use (registries purge them later anyway)."""
        with contextlib.suppress(EngineError):
            self.client.request(
                "DELETE", location, scopes=(push_scope(ref.path),), ok=(200, 202, 204, 404)
            ).release()

    # The push -------------------------------------------------------------------------------
    def push(self, rec: ImageRecord, ref: refs.Reference) -> PushResult:
        if ref.digest:
            raise InvalidArgument(
                f"cannot push a digest reference ({ref.familiar()}): push a tag", obj=ref.familiar()
            )
        what = ref.familiar()
        manifest_bytes = self.store.blobs.read(rec.manifest_digest)
        doc = json.loads(manifest_bytes)
        config_desc, layers = mf.check_image(doc, what)
        self.progress.status(f"The push refers to repository [{ref.familiar_name}]")
        # Docker lists layers top first.
        order = list(reversed(layers))
        for d in order:
            self.progress.layer(short_id(d["digest"]), "Preparing")
        for i, d in enumerate(order):
            if i >= self.concurrency:
                self.progress.layer(short_id(d["digest"]), "Waiting")
        unique = list({d["digest"]: d for d in order}.values())
        results = run_all(
            lambda d: self._push_layer_reporting(d, ref),
            unique,
            self.concurrency,
            name="berth-push",
        )
        pushed: dict[str, tuple[dict, str, int]] = {
            d["digest"]: r for d, r in zip(unique, results, strict=True)
        }
        # The config last among blobs (a registry may check a manifest's blobs).
        cfg_status, location = self._try_existing(config_desc, ref)
        uploaded = sum(p[2] for p in pushed.values())
        if not cfg_status:
            uploaded += self._upload_file(config_desc, ref, location, None)
        new_layers = [pushed[d["digest"]][0] for d in layers]
        if all(n is d or n == d for n, d in zip(new_layers, layers, strict=True)):
            body = manifest_bytes
        else:
            body = json.dumps({**doc, "layers": new_layers}, separators=(",", ":")).encode()
        digest = sha256_bytes(body)
        media = doc.get("mediaType") or mf.MT_OCI_MANIFEST
        tag = ref.tag or "latest"
        returned = self.client.put_manifest(ref.path, tag, body, media, what)
        if returned and returned != digest:
            raise RegistryError(
                f"registry {ref.domain} stored the manifest of {what} as {returned}, "
                f"but its content has digest {digest}",
                obj=what,
            )
        self.store.register_manifest(manifest_bytes, (), [f"{ref.name}@{digest}"])
        if self.blobinfo is not None:
            with contextlib.suppress(OSError):
                self.blobinfo.record(
                    locations=[
                        (d["digest"], ref.domain, ref.path) for d in [config_desc, *new_layers]
                    ],
                    compressed=[
                        (old["digest"], new)
                        for old, new in zip(layers, new_layers, strict=True)
                        if new["digest"] != old["digest"]
                    ],
                )
        self.progress.status(f"{tag}: digest: {digest} size: {len(body)}")
        report = [
            {
                "Digest": pushed[d["digest"]][0]["digest"],
                "Local": d["digest"],
                "Status": pushed[d["digest"]][1],
            }
            for d in layers
        ]
        return PushResult(what, tag, digest, len(body), report, uploaded)

    def _push_layer_reporting(self, desc: dict, ref: refs.Reference) -> tuple[dict, str, int]:
        result = self._push_layer(desc, ref)
        self.progress.layer(short_id(desc["digest"]), result[1])
        return result


def _gzip_descriptor(local: dict, digest: str, size: int) -> dict:
    """The descriptor of a layer's gzip form: same keys in the same order
    whatever the path that found it (the manifest's digest depends on it)."""
    media = _GZIP_OF.get(local.get("mediaType", mf.MT_OCI_LAYER), mf.MT_OCI_LAYER_GZIP)
    out = {"mediaType": media, "digest": digest, "size": size}
    out.update({k: v for k, v in local.items() if k not in out})
    return out
