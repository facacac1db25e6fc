"""Read-only views of the image store in Docker's shapes: ``images`` filters,
``image history``, ``image inspect`` and the images part of ``system df``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from engine.errors import InvalidArgument
from engine.images import reference as refs

if TYPE_CHECKING:
    from engine.images.store import HistoryEntry, ImageRecord, ImageStore, ImageUsage, InUse

FILTER_KEYS = ("dangling", "reference", "label", "before", "since")

# Keys Docker always shows in an image's Config, null when unset.
_CONFIG_KEYS = (
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "OnBuild",
    "Labels",
    "StopSignal",
)
_CONFIG_DEFAULTS: dict = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Image": "",
    "WorkingDir": "",
}


def parse_filters(items: Iterable[str]) -> dict[str, list[str]]:
    """CLI ``--filter k=v`` strings -> {key: [values]}."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"bad format of filter (expected name=value): {item!r}", obj=item)
        out.setdefault(key.strip().lower(), []).append(value)
    return out


def _values(v: str | Iterable[str]) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _bool(key: str, value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidArgument(f"invalid filter '{key}={value}': expected true or false", obj=value)


def apply_filters(
    store: ImageStore, records: list[ImageRecord], filters: Mapping[str, str | Iterable[str]]
) -> list[ImageRecord]:
    from engine.images.store import parse_time

    for key in filters:
        if key not in FILTER_KEYS:
            raise InvalidArgument(f"invalid filter '{key}'", obj=key)
    out = records
    for value in _values(filters.get("dangling", [])):
        want = _bool("dangling", value)
        out = [r for r in out if r.dangling == want]
    patterns = _values(filters.get("reference", []))
    if patterns:
        # Several reference filters: any may match (Docker ORs them).
        def ref_match(r: ImageRecord) -> bool:
            names = [
                refs.parse_reference(t, default_tag=False) for t in r.repo_tags + r.repo_digests
            ]
            return any(refs.match_pattern(p, n) for p in patterns for n in names)

        out = [r for r in out if ref_match(r)]
    for label in _values(filters.get("label", [])):
        # Several label filters: all must match (Docker ANDs them).
        k, sep, v = label.partition("=")
        out = [r for r in out if k in r.labels and (not sep or r.labels[k] == v)]
    for value in _values(filters.get("before", [])):
        limit = parse_time(store.get(value).created)
        out = [r for r in out if parse_time(r.created) < limit]
    for value in _values(filters.get("since", [])):
        limit = parse_time(store.get(value).created)
        out = [r for r in out if parse_time(r.created) > limit]
    return out


def history(store: ImageStore, rec: ImageRecord) -> list[HistoryEntry]:
    """``docker image history``: newest first; SIZE is the layer's size for
    entries that made a layer, 0 for metadata-only steps."""
    from engine.images.store import HistoryEntry

    sizes = [store.layers.get(c) for c in rec.chain_ids]
    layer_sizes = [i.size if i else 0 for i in sizes]
    entries = list(rec.config.get("history") or [])
    rows: list[HistoryEntry] = []
    li = 0
    for h in entries:
        empty = bool(h.get("empty_layer"))
        size = 0
        if not empty and li < len(layer_sizes):
            size = layer_sizes[li]
            li += 1
        rows.append(
            HistoryEntry(
                id="<missing>",
                created=h.get("created", ""),
                created_by=h.get("created_by", ""),
                size=size,
                comment=h.get("comment", ""),
                empty_layer=empty,
            )
        )
    # Layers the history does not account for (configs without history).
    for size in layer_sizes[li:]:
        rows.append(HistoryEntry("<missing>", rec.created, "", size, ""))
    rows.reverse()
    if rows:
        top = rows[0]
        rows[0] = HistoryEntry(
            rec.id,
            top.created,
            top.created_by,
            top.size,
            top.comment,
            rec.repo_tags,
            top.empty_layer,
        )
    return rows


def inspect(store: ImageStore, rec: ImageRecord) -> dict:
    """``docker image inspect`` for one image."""
    cfg = rec.config
    conf = dict(rec.config.get("config") or {})
    full_conf = {k: conf.get(k, _CONFIG_DEFAULTS.get(k)) for k in _CONFIG_KEYS}
    full_conf.update({k: v for k, v in conf.items() if k not in full_conf})
    dirs = [str(store.layers.diff_path(c)) for c in reversed(rec.chain_ids)]  # top first
    graph: dict = {}
    if dirs:
        graph["UpperDir"] = dirs[0]
        if len(dirs) > 1:
            graph["LowerDir"] = ":".join(dirs[1:])
    out = {
        "Id": rec.id,
        "RepoTags": list(rec.repo_tags),
        "RepoDigests": list(rec.repo_digests),
        "Parent": rec.parent,
        "Comment": cfg.get("comment", ""),
        "Created": rec.created,
        "DockerVersion": cfg.get("docker_version", ""),
        "Author": cfg.get("author", ""),
        "Config": full_conf,
        "Architecture": cfg.get("architecture", ""),
        "Os": cfg.get("os", ""),
        "Size": rec.size,
        "GraphDriver": {"Name": "overlay", "Data": graph},
        "RootFS": {"Type": "layers", "Layers": list(rec.diff_ids)},
        "Metadata": {"LastTagTime": rec.last_tag_time or "0001-01-01T00:00:00Z"},
    }
    if cfg.get("variant"):
        out["Variant"] = cfg["variant"]
    return out


def sizes(store: ImageStore, records: list[ImageRecord], in_use: InUse | None) -> list[ImageUsage]:
    """Per image: total size, the part shared with other images (layers by
    chain ID used by more than one image) and the unique rest."""
    from engine.images.store import ImageUsage

    uses = Counter(c for r in records for c in set(r.chain_ids))
    out = []
    for r in records:
        shared = 0
        for c in set(r.chain_ids):
            info = store.layers.get(c)
            if info and uses[c] > 1:
                shared += info.size
        out.append(
            ImageUsage(
                id=r.id,
                repo_tags=r.repo_tags,
                created=r.created,
                size=r.size,
                shared_size=shared,
                unique_size=r.size - shared,
                containers=len(in_use(r.id)) if in_use else 0,
            )
        )
    return out
