"""``pull``: manifest (through an index to this platform's), config, then the
layers, fetched in parallel and unpacked as each arrives.

Everything from the registry is untrusted until verified:

- a manifest fetched by digest must hash to it; one fetched by tag must hash
  to the registry's ``Docker-Content-Digest`` when it sends one;
- every blob is hashed while it streams to a temporary file (the config, at
  most 4 MB, into memory) and goes into the store only if digest and size
  match its descriptor (a registry that sends more bytes than the descriptor
  says is cut off); the config's blob is written while the layers stream;
- every layer's uncompressed content must hash to the config's diff ID (the
  layer store checks it while unpacking).

Blobs already in the store are not fetched again, and layers already
unpacked (same chain ID, e.g. shared with a local image) are not unpacked
again. A failed pull leaves no image and, through the store's garbage
collection, none of the blobs or layers it had added.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.errors import InvalidArgument, NotFound, Unsupported
from engine.images import reference as refs
from engine.images.content import chain_ids, check_digest, sha256_bytes
from engine.images.store import ImageStore
from engine.registry import manifests as mf
from engine.registry.blobinfo import BlobInfoCache
from engine.registry.client import RegistryClient
from engine.registry.parallel import run_all
from engine.registry.progress import Progress, short_id
from engine.registry.staging import StagedBlob
from engine.registry.unpack import BlobStream, Cancelled, NotResumable, fetch_and_unpack

DEFAULT_CONCURRENCY = 3  # Docker's max-concurrent-downloads


def concurrency_from_env() -> int:
    try:
        return max(1, int(os.environ.get("BERTH_MAX_CONCURRENT_DOWNLOADS", DEFAULT_CONCURRENCY)))
    except ValueError:
        return DEFAULT_CONCURRENCY


@dataclass
class PullResult:
    reference: str  # canonical: 127.0.0.1:5000/busybox:latest, or name@digest
    familiar: str
    image_id: str
    digest: str  # what the reference resolved to (an index's digest for a multi-platform image)
    manifest_digest: str  # the image manifest's
    platform: str
    up_to_date: bool
    layers: list[dict] = field(default_factory=list)
    downloaded: int = 0

    @property
    def status(self) -> str:
        if self.up_to_date:
            return f"Image is up to date for {self.familiar}"
        return f"Downloaded newer image for {self.familiar}"

    def to_dict(self) -> dict:
        return {
            "Reference": self.familiar,
            "Name": self.reference,
            "Id": self.image_id,
            "Digest": self.digest,
            "ManifestDigest": self.manifest_digest,
            "Platform": self.platform,
            "Status": self.status,
            "UpToDate": self.up_to_date,
            "Layers": self.layers,
            "Downloaded": self.downloaded,
        }


class Puller:
    def __init__(
        self,
        store: ImageStore,
        client: RegistryClient,
        *,
        progress: Progress,
        platform: mf.Platform | None = None,
        blobinfo: BlobInfoCache | None = None,
        concurrency: int | None = None,
    ):
        self.store = store
        self.client = client
        self.progress = progress
        self.platform = platform
        self.blobinfo = blobinfo
        self.concurrency = concurrency or concurrency_from_env()

    # Manifests --------------------------------------------------------------------------
    def _manifest(
        self, repo: str, reference: str, what: str, expected: str | None
    ) -> tuple[bytes, dict, str, str]:
        """(body, document, media type, digest), verified."""
        body, ctype, header_digest = self.client.get_manifest(repo, reference, mf.ACCEPT, what)
        digest = sha256_bytes(body)
        if expected is not None and digest != expected:
            raise InvalidArgument(
                f"manifest {expected} of {what} failed verification: content has digest {digest}; refused",
                obj=what,
            )
        if header_digest.startswith("sha256:") and header_digest != digest:
            raise InvalidArgument(
                f"manifest of {what} failed verification: the registry says {header_digest}, "
                f"the content has digest {digest}; refused",
                obj=what,
            )
        doc, mt = mf.parse(body, ctype, what)
        return body, doc, mt, digest

    def resolve(self, ref: refs.Reference) -> tuple[str, bytes, dict, str, mf.Platform | None]:
        """-> (top digest, image manifest bytes, its document, its digest, platform chosen)."""
        repo = ref.path
        what = ref.familiar()
        if ref.digest and not ref.digest.startswith("sha256:"):
            raise InvalidArgument(f"unsupported digest algorithm in {what}: only sha256", obj=what)
        body, doc, mt, top = self._manifest(
            repo, ref.digest or ref.tag or "latest", what, ref.digest
        )
        chosen = None
        if mt in mf.INDEXES:
            chosen = self.platform or mf.Platform.host()
            desc = mf.select_platform(doc, chosen, what)
            body, doc, mt, digest = self._manifest(repo, desc["digest"], what, desc["digest"])
            if isinstance(desc.get("size"), int) and desc["size"] != len(body):
                raise InvalidArgument(
                    f"manifest {desc['digest']} of {what} has {len(body)} bytes, the index says {desc['size']}",
                    obj=what,
                )
            if mt in mf.INDEXES:
                raise InvalidArgument(
                    f"{what}: an index inside an index is not supported", obj=what
                )
            return top, body, doc, digest, chosen
        return top, body, doc, top, chosen

    # Blobs ------------------------------------------------------------------------------
    def _fetch_blob(
        self, repo: str, desc: dict, what: str, cancel: threading.Event, quiet: bool
    ) -> int:
        """Stream one blob into the store, hashing as it comes; returns bytes fetched."""
        digest, size = desc["digest"], desc["size"]
        sid = short_id(digest)
        report = None if quiet else (lambda n: self.progress.bytes(sid, "Downloading", n, size))
        with StagedBlob(self.store.blobs) as staged:
            src = BlobStream(
                self.client,
                repo,
                desc,
                staged.file,
                what,
                report=report,
                cancel=cancel,
                restartable=True,
            )
            try:
                src.finish()
            finally:
                src.close()
            if not quiet:
                self.progress.layer(sid, "Verifying Checksum")
            staged.install(digest)
        return src.count

    def _layer_task(
        self,
        repo: str,
        desc: dict,
        unpack: list[tuple[str, str]],
        fetch: bool,
        what: str,
        cancel: threading.Event,
        prefetch: bool = False,
    ) -> int:
        digest, size = desc["digest"], desc["size"]
        sid = short_id(digest)
        media = desc.get("mediaType", "")
        got = 0
        if fetch and len(unpack) == 1 and media in mf.GZIP_LAYERS + mf.UNCOMPRESSED_LAYERS:
            # The usual case: fetch, verify and unpack in one pass.
            chain, diff_id = unpack[0]
            try:
                with StagedBlob(self.store.blobs) as staged:
                    got, _ = fetch_and_unpack(
                        self.client,
                        repo,
                        desc,
                        gzipped=media in mf.GZIP_LAYERS,
                        blob_out=staged.file,
                        layers=self.store.layers,
                        chain_id=chain,
                        diff_id=check_digest(diff_id),
                        what=what,
                        report=lambda n: self.progress.bytes(sid, "Downloading", n, size),
                        cancel=cancel,
                        prefetch=prefetch,
                    )
                    self.progress.layer(sid, "Verifying Checksum")
                    staged.install(digest)
                self.progress.layer(sid, "Download complete")
                self.progress.layer(sid, "Pull complete")
                return got
            except NotResumable:
                pass  # cut off, and no Range support: download it whole, then unpack (below)
        if fetch:
            got = self._fetch_blob(repo, desc, what, cancel, quiet=False)
            self.progress.layer(sid, "Download complete")
        for chain, diff_id in unpack:
            if cancel.is_set():
                raise Cancelled()
            self.progress.bytes(sid, "Extracting", 0, size, force=True)
            self.store.layers.ensure(chain, check_digest(diff_id), digest)
        self.progress.layer(sid, "Pull complete")
        return got

    # The pull ----------------------------------------------------------------------------
    def pull(self, ref: refs.Reference) -> PullResult:
        what = ref.familiar()
        top, manifest_bytes, doc, manifest_digest, chosen = self.resolve(ref)
        self.progress.status(f"Pulling from {ref.path}", id=ref.digest or ref.tag or "latest")
        config_desc, layers = mf.check_image(doc, what)
        tags = [] if ref.digest else [str(ref)]
        repo_digest = f"{ref.name}@{top}"
        before = self._existing(ref, top)
        fetched = 0
        layer_report: list[dict] = []
        # As Docker: an image already here whole gets no per-layer lines.
        had_config = self.store.blobs.has(config_desc["digest"])
        try:
            with self.store.writing():
                config, install_config = self._config(ref.path, config_desc, what)
                self._check_platform(config, chosen, what)
                diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
                if len(diff_ids) != len(layers):
                    raise InvalidArgument(
                        f"image {config_desc['digest']} of {what}: its config lists {len(diff_ids)} "
                        f"layers, its manifest {len(layers)}",
                        obj=what,
                    )
                # The config blob is stored (fsync'd) while the layers stream, not before.
                with _Background(install_config, "berth-pull-config"):
                    fetched, layer_report = self._layers(
                        ref.path, layers, diff_ids, what, quiet_if_complete=had_config
                    )
                rec = self.store.register_manifest(manifest_bytes, tags, [repo_digest])
        except BaseException:
            # Whatever this pull added and no image references goes again.
            with contextlib.suppress(Exception):
                self.store.gc(timeout=2.0)
            raise
        if self.blobinfo is not None:
            with contextlib.suppress(OSError):
                self.blobinfo.record(
                    locations=[(d["digest"], ref.domain, ref.path) for d in [config_desc, *layers]]
                )
        familiar = ref.familiar() if not ref.digest else f"{ref.familiar_name}@{ref.digest}"
        result = PullResult(
            reference=str(ref) if not ref.digest else f"{ref.name}@{ref.digest}",
            familiar=familiar,
            image_id=rec.id,
            digest=top,
            manifest_digest=manifest_digest,
            platform=_platform_of(config, chosen),
            up_to_date=before == (rec.id, manifest_digest) and fetched == 0,
            layers=layer_report,
            downloaded=fetched,
        )
        self.progress.status(f"Digest: {top}")
        self.progress.status(f"Status: {result.status}")
        return result

    def _existing(self, ref: refs.Reference, top: str) -> tuple[str, str] | None:
        name = f"{ref.name}@{top}" if ref.digest else str(ref)
        try:
            rec = self.store.get(name)
        except (NotFound, InvalidArgument):
            return None
        return rec.id, rec.manifest_digest

    def _config(self, repo: str, desc: dict, what: str) -> tuple[dict, Callable[[], object] | None]:
        """The image config, verified; and, when it was fetched, what stores its blob."""
        digest = desc["digest"]
        if desc["size"] > mf.MAX_CONFIG:
            raise InvalidArgument(
                f"image config {digest} of {what} is larger than {mf.MAX_CONFIG} bytes; refused",
                obj=what,
            )
        install = None
        if self.store.blobs.has(digest):
            data = self.store.blobs.read(digest)
        else:
            buf = io.BytesIO()
            src = BlobStream(self.client, repo, desc, buf, what, restartable=True)
            try:
                src.finish()  # bounded by the descriptor's size; digest checked
            finally:
                src.close()
            data = buf.getvalue()
            install = lambda: self.store.blobs.put_bytes(data, expected=digest)  # noqa: E731
        try:
            config = json.loads(data)
        except ValueError as e:
            raise InvalidArgument(
                f"image config {digest} of {what} is not valid JSON: {e}"
            ) from None
        if not isinstance(config, dict):
            raise InvalidArgument(f"image config {digest} of {what} is not a JSON object")
        return config, install

    def _check_platform(self, config: dict, chosen: mf.Platform | None, what: str) -> None:
        actual = mf.Platform.of(config)
        if (
            actual is not None
            and actual.os != "linux"
            and (self.platform is None or self.platform.os == "linux")
        ):
            raise Unsupported(
                f"image operating system {actual.os!r} of {what} cannot be used on this platform",
                obj=what,
            )
        # A single-platform image pulled with --platform must be of that platform.
        if chosen is not None or self.platform is None:
            return
        if actual is not None and not self.platform.matches(actual):
            raise NotFound(
                f"image {what} was found but does not match the specified platform: "
                f"wanted {self.platform}, actual: {actual}",
                obj=what,
            )

    def _layers(
        self,
        repo: str,
        layers: list[dict],
        diff_ids: list[str],
        what: str,
        *,
        quiet_if_complete: bool = False,
    ) -> tuple[int, list[dict]]:
        chains = chain_ids(diff_ids)
        plan: dict[str, tuple[dict, list[tuple[str, str]], bool]] = {}
        report: list[dict] = []
        for desc, diff_id, chain in zip(layers, diff_ids, chains, strict=True):
            digest = desc["digest"]
            check_digest(diff_id)
            have_blob = self.store.blobs.has(digest)
            have_layer = self.store.layers.get(chain) is not None
            entry = plan.get(digest)
            if entry is None:
                entry = plan[digest] = (desc, [], not have_blob)
            if not have_layer:
                entry[1].append((chain, diff_id))
            status = "Already exists" if have_blob and have_layer else "Pull complete"
            report.append(
                {"Digest": digest, "Size": desc["size"], "DiffID": diff_id, "Status": status}
            )
        work = {d: e for d, e in plan.items() if e[2] or e[1]}
        if not work and quiet_if_complete:
            return 0, report
        for d in plan:
            sid = short_id(d)
            if d not in work:
                self.progress.layer(sid, "Already exists")
            else:
                self.progress.layer(sid, "Pulling fs layer")
        for i, d in enumerate(d for d in work if work[d][2]):
            if i >= self.concurrency:
                self.progress.layer(short_id(d), "Waiting")
        if not work:
            return 0, report
        cancel = threading.Event()
        # Layers streaming at once: fewer than the cores, and each gets a second thread.
        streams = min(self.concurrency, sum(1 for e in work.values() if e[2]))
        prefetch = streams < (os.cpu_count() or 1)
        fetched = run_all(
            lambda entry: self._layer_task(
                repo, entry[0], entry[1], entry[2], what, cancel, prefetch
            ),
            list(work.values()),
            self.concurrency,
            cancel,
            name="berth-pull",
        )
        return sum(fetched), report


class _Background:
    """``fn()`` on a thread for the length of a ``with`` block; its error, if any,
    is raised when the block ends (after the block's own, which wins)."""

    def __init__(self, fn: Callable[[], object] | None, name: str):
        self.fn, self.error = fn, None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True) if fn else None

    def _run(self) -> None:
        try:
            self.fn()  # type: ignore[misc]
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
            self.error = e

    def __enter__(self) -> _Background:
        if self.thread is not None:
            self.thread.start()
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None and exc_type is None:
            raise self.error


def _platform_of(config: dict, chosen: mf.Platform | None) -> str:
    p = mf.Platform.of(config)
    return str(p or chosen or "")
