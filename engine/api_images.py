"""The images part of the engine facade: ``ImagesAPI``, mixed into ``engine.api.Engine``.

The mixin expects from its host class: ``self.images`` (an ImageStore),
``self.emit(type, action, id, **attrs)`` and, once containers exist,
``self.containers_using_image(image_id) -> [container names]``.

Listing rows carry the keys of ``docker images --format '{{json .}}'`` (human
sizes and times, so the dashboard and the CLI show the same text) plus raw
fields (``FullID``, ``Created`` in epoch seconds, ``SizeBytes`` ...) for
sorting and links. Every change appends an ``image`` event with Docker's
action names, so the dashboard's live views and audit log see CLI actions too.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from engine._lazy import lazy
from engine.errors import Conflict, InvalidArgument, NotFound
from engine.units import human_duration, human_size

refs = lazy("engine.images.reference")

if TYPE_CHECKING:
    from engine.images.store import ImageRecord, ImageStore

# The keys docker's image formatter offers (``{{json .}}`` prints exactly these).
IMAGE_ROW_KEYS = (
    "Containers",
    "CreatedAt",
    "CreatedSince",
    "Digest",
    "ID",
    "Repository",
    "SharedSize",
    "Size",
    "Tag",
    "UniqueSize",
    "VirtualSize",
)
HISTORY_ROW_KEYS = ("Comment", "CreatedAt", "CreatedBy", "CreatedSince", "ID", "Size")
NONE = "<none>"


def since_text(epoch: float, now: float | None = None) -> str:
    """``"3 minutes ago"`` (docker's CreatedSince); "N/A" when the time is unknown."""
    if not epoch:
        return "N/A"
    return human_duration((now or time.time()) - epoch) + " ago"


def go_time_string(epoch: float) -> str:
    """Go's ``time.Time.String()`` in local time: ``2024-05-01 10:00:00 +0000 UTC``."""
    dt = datetime.fromtimestamp(int(epoch)).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M:%S %z ") + (dt.tzname() or "")


def rfc3339(epoch: float) -> str:
    """Go's ``time.RFC3339`` in local time (``docker history -H=false``): UTC as "Z"."""
    text = datetime.fromtimestamp(int(epoch)).astimezone().isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# -- the mixin ----------------------------------------------------------------------------


class ImagesAPI:
    if TYPE_CHECKING:  # provided by Engine; declared here only for the type checker
        images: ImageStore

        def emit(self, type_: str, action: str, obj_id: str, **attrs: object) -> int: ...

    # Helpers ----------------------------------------------------------------------------
    def _image_users(self, image_id: str) -> list[str]:
        """Names of containers using the image. The containers mixin provides
        the lookup; without it (unit tests of this mixin alone) nothing is in use."""
        lookup = getattr(self, "containers_using_image", None)
        return list(lookup(image_id)) if lookup else []

    def _emit_image(self, action: str, image_id: str, name: str = "", **attrs: object) -> None:
        self.emit("image", action, image_id, name=name or image_id, **attrs)

    @staticmethod
    def _summary(rec: ImageRecord) -> dict:
        return {
            "Id": rec.id,
            "ID": rec.short_id,
            "RepoTags": list(rec.repo_tags),
            "RepoDigests": list(rec.repo_digests),
            "Created": rec.created,
            "Size": rec.size,
        }

    # Creating images --------------------------------------------------------------------
    def bootstrap_image(self, kind: str, ref: str | None = None) -> dict:
        """Build a base image from the host: "busybox" (busybox-static, seconds,
        reproducible ID) or "debian" (debootstrap, minutes)."""
        from engine.images import bootstrap

        if kind == "busybox":
            rec = bootstrap.bootstrap_busybox(self.images, ref or "busybox:latest")
        elif kind == "debian":
            rec = bootstrap.bootstrap_debian(self.images, ref or "debian:bookworm")
        else:
            raise InvalidArgument(
                f"unknown bootstrap image kind {kind!r}: expected busybox or debian", obj=kind
            )
        # Docker has no bootstrap; to watchers it is an import from the host.
        name = refs.familiar(ref) if ref else (rec.repo_tags or (rec.id,))[0]
        self._emit_image("import", rec.id, name, source=f"bootstrap:{kind}")
        return self._summary(rec)

    def import_image(
        self,
        stream: BinaryIO,
        ref: str | None = None,
        changes: list[str] | tuple[str, ...] = (),
        message: str = "",
    ) -> dict:
        """``docker import``: a rootfs tar (plain or gzip) as a one-layer image."""
        from engine.images.archive import import_rootfs

        rec = import_rootfs(self.images, stream, ref, list(changes), message)
        self._emit_image("import", rec.id, refs.familiar(ref) if ref else rec.id)
        return self._summary(rec)

    def load_images(self, stream: BinaryIO) -> list[str]:
        """``docker load``: names loaded (``busybox:latest``), or IDs for unnamed images."""
        from engine.images.archive import load

        loaded = load(self.images, stream)
        for name in loaded:
            self._emit_image("load", self.images.get(name).id, name)
        return loaded

    def save_images(self, image_refs: list[str], out: BinaryIO) -> None:
        """``docker save`` to a binary stream (OCI layout + manifest.json)."""
        from engine.images.archive import save

        save(self.images, image_refs, out)
        for text in image_refs:
            try:
                image_id = self.images.get(text).id
            except (NotFound, InvalidArgument):
                image_id = ""  # a bare repository whose tags are not ":latest"
            self._emit_image("save", image_id, text)

    # Names --------------------------------------------------------------------------------
    def tag_image(self, src: str, dst: str) -> dict:
        rec = self.images.tag(src, dst)
        self._emit_image("tag", rec.id, refs.familiar(refs.normalize(dst)))
        return self._summary(rec)

    def remove_image(self, ref: str, force: bool = False) -> list[str]:
        """``docker rmi`` for one argument: Docker's lines ("Untagged: ...", "Deleted: ...")."""
        image_id = self.images.get(ref).id
        detail = getattr(self, "image_users_detail", None)
        lines = self.images.remove(ref, force=force, in_use=self._image_users, users_detail=detail)
        self._emit_removal(image_id, lines)
        return lines

    def _emit_removal(self, image_id: str, lines: list[str]) -> None:
        for line in lines:
            kind, _, what = line.partition(": ")
            if kind == "Untagged":
                self._emit_image("untag", image_id, what)
            elif kind == "Deleted" and what == image_id:
                # Other "Deleted:" lines are the layers that went with it.
                self._emit_image("delete", image_id, image_id)

    # Queries ----------------------------------------------------------------------------
    def list_images(
        self, all: bool = False, filters: list[str] | tuple[str, ...] = (), digests: bool = False
    ) -> list[dict]:
        """``docker images``: one row per repository:tag (per digest too with
        ``digests``), dangling images as <none>:<none>; newest first."""
        from engine.images.query import parse_filters

        parsed = parse_filters(filters)
        records = self.images.list(all=all, filters=parsed)
        patterns = parsed.get("reference", [])
        now = time.time()
        rows: list[dict] = []
        for rec in records:
            base = self._row_base(rec, now)
            for repo, tag, digest in _names(rec, digests, patterns):
                rows.append({**base, "Repository": repo, "Tag": tag, "Digest": digest})
        return rows

    def _row_base(self, rec: ImageRecord, now: float) -> dict:
        from engine.images.store import parse_time

        created = parse_time(rec.created)
        return {
            "Containers": str(len(self._image_users(rec.id))),
            "CreatedAt": go_time_string(created) if created else "",
            "CreatedSince": since_text(created, now),
            "ID": rec.short_id,
            "SharedSize": "N/A",
            "Size": human_size(rec.size, 3),
            "UniqueSize": "N/A",
            "VirtualSize": human_size(rec.size),
            # Raw fields for programs (the dashboard sorts and links by these).
            "FullID": rec.id,
            "Created": int(created),
            "SizeBytes": rec.size,
            "RepoTags": list(rec.repo_tags),
            "RepoDigests": list(rec.repo_digests),
            "Labels": rec.labels,
            "Dangling": rec.dangling,
        }

    def inspect_image(self, ref: str) -> dict:
        return self.images.inspect(ref)

    def image_history(self, ref: str) -> list[dict]:
        """``docker image history``, newest first: docker's format keys (full
        values; the CLI truncates) plus raw ``Created``, ``SizeBytes``, ``Tags``."""
        from engine.images.store import parse_time

        now = time.time()
        rows = []
        for h in self.images.history(ref):
            created = parse_time(h.created)
            rows.append(
                {
                    "Comment": h.comment,
                    "CreatedAt": rfc3339(created) if created else "",
                    "CreatedBy": h.created_by,
                    "CreatedSince": since_text(created, now),
                    "ID": h.id,
                    "Size": human_size(h.size, 3),
                    "Created": int(created),
                    "SizeBytes": h.size,
                    "Tags": list(h.tags),
                    "EmptyLayer": h.empty_layer,
                }
            )
        return rows

    def image_df(self) -> list[dict]:
        """The images part of ``system df``: sizes with the shared/unique split."""
        from engine.images.store import parse_time

        return [
            {
                "Id": u.id,
                "RepoTags": list(u.repo_tags),
                "Created": int(parse_time(u.created)),
                "Size": u.size,
                "SharedSize": u.shared_size,
                "UniqueSize": u.unique_size,
                "Containers": u.containers,
            }
            for u in self.images.sizes(self._image_users)
        ]

    # Pruning ----------------------------------------------------------------------------
    def prune_images(self, all: bool = False) -> dict:
        """``docker image prune``: untagged images (every image with ``all``)
        that no container uses. Returns Docker's ``ImagesDeleted`` items,
        the CLI's lines ("untagged: X", "deleted: Y") and ``SpaceReclaimed``."""
        layer_size: dict[str, int] = {}
        candidates: list[str] = []
        for rec in self.images.list(all=True):
            if (all or not rec.repo_tags) and not self._image_users(rec.id):
                candidates.append(rec.id)
                for c in rec.chain_ids:
                    info = self.images.layers.get(c)
                    layer_size[c] = info.size if info else 0
        deleted: list[dict] = []
        reclaimed = 0
        # Parents refuse deletion while a child exists: retry until no progress
        # (newest-first order usually removes children first anyway).
        pending = candidates
        while pending:
            blocked = []
            for image_id in pending:
                try:
                    lines = self.images.remove(image_id, force=True, in_use=self._image_users)
                except Conflict:
                    blocked.append(image_id)
                    continue
                except NotFound:  # removed meanwhile by another client
                    continue
                self._emit_removal(image_id, lines)
                for line in lines:
                    kind, _, what = line.partition(": ")
                    if kind == "Untagged":
                        deleted.append({"Untagged": what})
                    elif kind == "Deleted":
                        deleted.append({"Deleted": what})
                        reclaimed += layer_size.get(what, 0)
            if len(blocked) == len(pending):
                break
            pending = blocked
        # Images removed with -f while a container used them stay hidden until
        # no container does; prune is where they finally go.
        # Counted as Docker counts it: the unpacked size of each layer that went (not
        # its compressed blob too).
        on_disk = {}
        for c in self.images.layers.chain_ids_on_disk():
            info = self.images.layers.get(c)
            on_disk[c] = info.size if info else 0
        gc = self.images.gc(in_use=self._image_users, timeout=5.0)
        if gc is not None:
            deleted.extend({"Deleted": c} for c in gc.layers_removed)
            reclaimed += sum(on_disk.get(c, 0) for c in gc.layers_removed)
        self.emit("image", "prune", "", reclaimed=str(reclaimed))
        lines = [
            f"untagged: {d['Untagged']}" if "Untagged" in d else f"deleted: {d['Deleted']}"
            for d in deleted
        ]
        return {"ImagesDeleted": deleted, "Lines": lines, "SpaceReclaimed": reclaimed}


def _names(rec: ImageRecord, digests: bool, patterns: list[str]) -> list[tuple[str, str, str]]:
    """(repository, tag, digest) rows for one image, as docker's image formatter
    builds them: a tagged repository shows its digests only with ``--digests``;
    a repository known only by digest gets a <none> tag row. With ``reference``
    filters only the matching names are shown (the daemon trims RepoTags so)."""
    if rec.dangling:
        return [(NONE, NONE, NONE)]

    def wanted(text: str) -> bool:
        if not patterns:
            return True
        ref = refs.parse_reference(text, default_tag=False)
        return any(refs.match_pattern(p, ref) for p in patterns)

    tags: dict[str, list[str]] = {}
    for t in rec.repo_tags:
        if wanted(t):
            ref = refs.parse_reference(t)
            tags.setdefault(ref.familiar_name, []).append(ref.tag or NONE)
    by_digest: dict[str, list[str]] = {}
    for d in rec.repo_digests:
        if wanted(d):
            ref = refs.parse_reference(d, default_tag=False)
            by_digest.setdefault(ref.familiar_name, []).append(ref.digest or NONE)
    rows: list[tuple[str, str, str]] = []
    for repo in sorted(tags):
        # A tagged repository's digests never get rows of their own.
        repo_digests = by_digest.pop(repo, [])
        for tag in sorted(tags[repo]):
            for d in (repo_digests if digests else []) or [NONE]:
                rows.append((repo, tag, d))
    for repo in sorted(by_digest):
        if digests:
            rows.extend((repo, NONE, d) for d in by_digest[repo])
        else:
            rows.append((repo, NONE, ""))  # docker leaves this digest empty
    return rows


def docker_row(row: dict[str, Any], keys: tuple[str, ...] = IMAGE_ROW_KEYS) -> dict[str, Any]:
    """Only docker's keys, sorted as Go's JSON of a map sorts them (for ``{{json .}}``)."""
    return {k: row[k] for k in sorted(keys) if k in row}
