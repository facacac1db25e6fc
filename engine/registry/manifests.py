"""Manifests as registries serve them: media types, checks, platform selection.

Pull accepts Docker schema 2 manifests and manifest lists, OCI manifests and
indexes; schema 1 (signed JSON, long deprecated) is refused with a clear error.
An index is resolved to one image manifest by platform: the one asked for
(``--platform os/arch[/variant]``) or this host's (``linux/<GOARCH>``).
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass

from engine.errors import InvalidArgument, NotFound, Unsupported
from engine.images.content import check_digest

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_V1 = "application/vnd.docker.distribution.manifest.v1+json"
MT_DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

IMAGE_MANIFESTS = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
INDEXES = (MT_OCI_INDEX, MT_DOCKER_LIST)
ACCEPT = (MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
UNCOMPRESSED_LAYERS = (MT_OCI_LAYER, MT_DOCKER_LAYER)
GZIP_LAYERS = (MT_OCI_LAYER_GZIP, MT_DOCKER_LAYER_GZIP)
MAX_MANIFEST = 4 << 20  # as containerd: a manifest larger than this is refused
MAX_CONFIG = 4 << 20  # as containers/image: an image config is read whole into memory

_GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "i386": "386",
}
_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "i386": "386",
    "i686": "386",
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = [p.strip().lower() for p in text.split("/")]
        if len(parts) == 1 and parts[0]:
            parts = ["linux", parts[0]]
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise InvalidArgument(
                f"invalid platform {text!r}: expected os/arch[/variant], like linux/amd64 or linux/arm/v7",
                obj=text,
            )
        arch = _ARCH_ALIASES.get(parts[1], parts[1])
        return _normalized(cls(parts[0], arch, parts[2] if len(parts) == 3 else ""))

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine()
        arch = _GOARCH.get(machine, machine)
        variant = ""
        if machine == "armv7l":
            variant = "v7"
        elif machine == "armv6l":
            variant = "v6"
        return _normalized(cls("linux", arch, variant))

    @classmethod
    def of(cls, entry: dict | None) -> Platform | None:
        if not isinstance(entry, dict) or not entry.get("architecture") or not entry.get("os"):
            return None
        arch = _ARCH_ALIASES.get(str(entry["architecture"]), str(entry["architecture"]))
        return _normalized(cls(str(entry["os"]), arch, str(entry.get("variant") or "")))

    def matches(self, other: Platform) -> bool:
        return (self.os, self.architecture) == (other.os, other.architecture) and (
            not self.variant or not other.variant or self.variant == other.variant
        )


def _normalized(p: Platform) -> Platform:
    # containerd's normalisation: arm64 is v8 unless said otherwise; arm is v7.
    if p.architecture == "arm64" and p.variant in ("8", "v8"):
        return Platform(p.os, p.architecture, "")
    if p.architecture == "arm" and p.variant in ("", "7"):
        return Platform(p.os, p.architecture, "v7")
    return p


def media_type(doc: dict, content_type: str) -> str:
    """The manifest's own ``mediaType``, else the response's Content-Type, else by shape."""
    mt = doc.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if content_type in ACCEPT or content_type in (MT_DOCKER_V1, MT_DOCKER_V1_SIGNED):
        return content_type
    if doc.get("schemaVersion") == 1:
        return MT_DOCKER_V1
    if "manifests" in doc:
        return MT_OCI_INDEX
    if "config" in doc:
        return MT_OCI_MANIFEST
    return content_type


def parse(body: bytes, content_type: str, what: str) -> tuple[dict, str]:
    """(document, media type) of a manifest or index; schema 1 refused."""
    if len(body) > MAX_MANIFEST:
        raise InvalidArgument(f"manifest for {what} is larger than {MAX_MANIFEST} bytes", obj=what)
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise InvalidArgument(f"manifest for {what} is not valid JSON: {e}", obj=what) from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"manifest for {what} is not a JSON object", obj=what)
    mt = media_type(doc, content_type)
    if mt in (MT_DOCKER_V1, MT_DOCKER_V1_SIGNED) or doc.get("schemaVersion") == 1:
        raise Unsupported(
            f"{what} has a Docker schema 1 manifest, which is deprecated and not supported; "
            "push it again with a current client",
            obj=what,
        )
    if mt not in IMAGE_MANIFESTS and mt not in INDEXES:
        raise Unsupported(f"{what}: unsupported manifest media type {mt!r}", obj=what)
    return doc, mt


def check_image(doc: dict, what: str) -> tuple[dict, list[dict]]:
    """(config descriptor, layer descriptors) of an image manifest, validated."""
    try:
        config = doc["config"]
        layers = list(doc.get("layers") or [])
        for d in [config, *layers]:
            check_digest(d["digest"])
            if not isinstance(d.get("size"), int) or d["size"] < 0:
                raise ValueError(f"descriptor {d['digest']} has no valid size")
    except (KeyError, TypeError, ValueError, InvalidArgument) as e:
        raise InvalidArgument(f"invalid image manifest for {what}: {e}", obj=what) from None
    for d in layers:
        mt = d.get("mediaType", "")
        if mt == MT_OCI_LAYER_ZSTD:
            raise Unsupported(
                f"{what} has zstd-compressed layers, which are not supported yet", obj=what
            )
        if mt == MT_DOCKER_FOREIGN or "nondistributable" in mt:
            raise Unsupported(
                f"{what} has foreign (non-distributable) layers, which Berth does not fetch",
                obj=what,
            )
        if mt and mt not in UNCOMPRESSED_LAYERS + GZIP_LAYERS:
            raise Unsupported(f"{what}: unsupported layer media type {mt!r}", obj=what)
    return config, layers


def select_platform(index: dict, want: Platform, what: str) -> dict:
    """The descriptor in an index for platform ``want`` (an exact variant beats
    none). Attestation entries (``unknown/unknown``) are never chosen."""
    entries = [d for d in index.get("manifests") or [] if isinstance(d, dict)]
    best: tuple[int, dict] | None = None
    offered = []
    for d in entries:
        p = Platform.of(d.get("platform"))
        if p is None or p.os == "unknown":
            continue
        offered.append(str(p))
        if not want.matches(p):
            continue
        score = 2 if p.variant == want.variant else 1
        if best is None or score > best[0]:
            best = (score, d)
    if best is None:
        listed = ", ".join(sorted(set(offered))) or "none"
        raise NotFound(
            f"no matching manifest for {want} in the manifest list entries of {what} (it has: {listed})",
            obj=what,
        )
    desc = best[1]
    try:
        check_digest(desc["digest"])
    except (KeyError, InvalidArgument) as e:
        raise InvalidArgument(f"invalid manifest list for {what}: {e}", obj=what) from None
    return desc
