"""``berth image advise``: where an image's bytes are and how to slim and
harden it — for a built image (its layers, config and history) or for a
Dockerfile (its lines and its build context).

The report is a plain dict (JSON-ready) so the CLI, the dashboard and tests
read the same thing::

    {"kind": "image"|"dockerfile", "target": ..., "size": bytes,
     "layers": [{"index", "size", "files", "created_by", "largest": [...]}],
     "largest_files": [{"path", "size", "layer"}],
     "findings": [Finding.to_dict()...], "savings": bytes}

Every finding names the Dockerfile lines or the history entries / layers it
is about and, where it can be computed, the bytes fixing it would save.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidArgument
from engine.images import advise_rules as R
from engine.images.advise_fs import ImageFiles, scan_image
from engine.units import human_size

if TYPE_CHECKING:
    from engine.images.store import ImageStore

BASE_NAME_LABEL = "org.opencontainers.image.base.name"
_FROM_RE = re.compile(r"(?:^|\s)FROM\s+(\S+)", re.I)


def advise_image(store: ImageStore, ref: str, top: int = 10) -> dict[str, Any]:
    """The report for image ``ref`` (name or ID) in ``store``."""
    from engine.images.advise_image import find_all, short_cmd, steps

    rec, matched = store.resolve(ref)
    infos = store.layer_infos(rec)
    img = scan_image([i.path for i in infos])
    st = steps(rec.config, len(infos))
    # Asked by name, judge that name (the image may be a base itself); by ID, every tag.
    own = [ref] if matched else list(rec.repo_tags)
    findings = find_all(img, rec.config, base_names(rec.config, own))
    by_layer = {s.layer: s for s in st if s.layer is not None}
    layers = []
    for layer, info in zip(img.layers, infos, strict=True):
        s = by_layer.get(layer.index)
        own = sorted(layer.files.items(), key=lambda kv: -kv[1])[:top]
        layers.append(
            {
                "index": layer.index,
                "diff_id": info.diff_id,
                "size": info.size,
                "files": len(layer.files),
                "deletes": len(layer.whiteouts) + len(layer.opaque),
                "history": s.index if s else None,
                "created_by": short_cmd(s.created_by, 200) if s else "",
                "largest": [
                    {"path": p, "size": n, "live": img.live.get(p, (None,))[0] == layer.index}
                    for p, n in own
                    if n
                ],
            }
        )
    return {
        "kind": "image",
        "target": ref,
        "id": rec.id,
        "tags": list(rec.repo_tags),
        "size": rec.size,
        "layers": layers,
        "largest_files": largest_files(img, top),
        "findings": [f.to_dict() for f in _ordered(findings)],
        "savings": savings(findings, img),
    }


def base_names(config: dict, tags: list[str]) -> list[str]:
    """What the image says it was built from: the OCI base-name label, a
    ``FROM`` kept in its history, else its own tags (the image may be the base)."""
    conf = config.get("config") or {}
    names = []
    label = (conf.get("Labels") or {}).get(BASE_NAME_LABEL)
    if label:
        names.append(str(label))
    for h in config.get("history") or []:
        m = _FROM_RE.search(str(h.get("created_by", "")))
        if m and m.group(1).lower() != "scratch":
            names.append(m.group(1))
    return names or tags


def largest_files(img: ImageFiles, top: int) -> list[dict[str, Any]]:
    live = sorted(img.live.items(), key=lambda kv: -kv[1][1])[:top]
    return [{"path": p, "size": s, "layer": li} for p, (li, s) in live if s]


def savings(findings: list[R.Finding], img: ImageFiles | None = None) -> int:
    """Bytes all fixes together would save: each finding's bytes, with cache
    files that a later layer deletes counted once (both findings name them)."""
    total = sum(f.bytes or 0 for f in findings)
    if img is not None and any(f.id == R.PACKAGE_CACHE for f in findings):
        wasted_ids = {f.id for f in findings}
        if R.DELETED_LATER in wasted_ids or R.REPLACED_LATER in wasted_ids:
            total -= sum(w.size for w in img.wasted if R.cache_of(w.path))
    return max(total, 0)


_SEVERITY = {"warning": 0, "info": 1}


def _ordered(findings: list[R.Finding]) -> list[R.Finding]:
    return sorted(findings, key=lambda f: (_SEVERITY.get(f.severity, 2), -(f.bytes or 0)))


# -- text ---------------------------------------------------------------------------------


def render_text(report: dict[str, Any]) -> str:
    """The human report (the CLI's default output)."""
    out: list[str] = []
    if report["kind"] == "image":
        tag = report["tags"][0] if report["tags"] else report["target"]
        n = len(report["layers"])
        out.append(
            f"Image {tag} ({report['id'][7:19]}): {human_size(report['size'])}"
            f" in {n} layer{'s' if n != 1 else ''}"
        )
        out.append("")
        out.append("Layers (bottom first):")
        out.append(f"  {'#':>3}  {'SIZE':>9}  {'FILES':>6}  CREATED BY")
        for layer in report["layers"]:
            out.append(
                f"  {layer['index']:>3}  {human_size(layer['size']):>9}  {layer['files']:>6}  "
                f"{_cut(layer['created_by'] or '-', 70)}"
            )
            for f in layer["largest"][:3]:
                gone = "" if f["live"] else "  (deleted or replaced later)"
                out.append(f"{'':>25}{human_size(f['size']):>9}  {f['path']}{gone}")
    else:
        out.append(f"Dockerfile {report['target']}")
        if report.get("context"):
            ctx = report["context"]
            out.append(
                f"Build context {ctx['path']}: {human_size(ctx['size'])} in {ctx['files']} files"
                + ("" if ctx["dockerignore"] else " (no .dockerignore)")
            )
        if report.get("stages"):
            names = [s["name"] or s["image"] for s in report["stages"]]
            out.append(f"Stages: {len(names)} ({', '.join(names)})")
        out.append("")
        out.append("Steps that make the image's layers (size where the context tells it):")
        out.append(f"  {'LINE':>4}  {'SIZE':>9}  INSTRUCTION")
        for row in report["layers"]:
            size = human_size(row["size"]) if row["size"] is not None else "?"
            out.append(f"  {row['line']:>4}  {size:>9}  {_cut(row['instruction'], 80)}")
    if report.get("largest_files"):
        out.append("")
        title = (
            "in the final filesystem" if report["kind"] == "image" else "copied from the context"
        )
        out.append(f"Largest files {title}:")
        for f in report["largest_files"]:
            out.append(f"  {human_size(f['size']):>9}  {f['path']}{_where(f)}")
    out.append("")
    findings = report["findings"]
    if not findings:
        out.append("No findings: nothing to slim or harden that the advisor knows of.")
        return "\n".join(out) + "\n"
    save = f", about {human_size(report['savings'])} to save" if report["savings"] else ""
    out.append(f"Findings ({len(findings)}{save}):")
    for f in findings:
        size = f"  [saves {human_size(f['bytes'])}]" if f.get("bytes") else ""
        out.append(f"- {f['severity'].upper()} {f['id']}: {f['title']}{size}")
        out.append(f"    {f['detail']}")
        for line, text in zip(f["lines"], f["text"], strict=False):
            out.append(f"    line {line}: {_cut(text, 90)}")
        for text in f["text"][len(f["lines"]) :]:
            out.append(f"    {_cut(text, 96)}")
        for p in f["paths"][:3]:
            out.append(f"    {human_size(p['size']):>9}  {p['path']}{_where(p)}")
        out.append(f"    fix: {f['fix']}")
    return "\n".join(out) + "\n"


def _where(item: dict[str, Any]) -> str:
    if item.get("layer") is not None:
        return f"  (layer {item['layer']})"
    if item.get("line") is not None:
        return f"  (line {item['line']})"
    return ""


def is_dockerfile_target(target: str, kind: str | None = None) -> bool:
    """A Dockerfile when ``kind`` says so or ``target`` is an existing file, or a
    directory holding a ``Dockerfile``; an image reference otherwise."""
    if kind not in (None, "", "image", "dockerfile"):
        raise InvalidArgument(f"unknown advise target kind {kind!r}: image or dockerfile", obj=kind)
    if kind:
        return kind == "dockerfile"
    p = Path(target)
    if p.is_dir() and target.startswith(("/", ".")):
        return True  # plainly a path: "no Dockerfile in it" beats "invalid reference"
    return p.is_file() or (p.is_dir() and (p / "Dockerfile").is_file())


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
