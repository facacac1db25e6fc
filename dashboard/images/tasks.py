"""Long image operations as tracked Celery tasks (queue `long`); progress on the task page.

Pull and push forward the engine's Docker-shaped progress messages as
{"id": layer, "status", "current", "total"} entries (one per layer every 0.2 s at most,
every status change); build forwards its output line by line. Uploaded files (build
contexts, import archives) are removed by the task that used them, whatever the outcome.
A retried task redoes its work: pulls and pushes skip what is already there, builds hit
their cache, import/export write whole files. Pulls and pushes are retried (3 times,
2/4/8 s apart) when the registry cannot be reached.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from dashboard.images import transfers
from dashboard.live import tasks_api
from dashboard.services import images


def registry_progress(ctx: tasks_api.TaskContext):
    """The engine's pull/push messages -> progress entries (throttled per layer)."""

    def forward(msg: dict) -> None:
        detail = msg.get("progressDetail") or {}
        entry: dict[str, Any] = {"status": msg.get("status", "")}
        if msg.get("id"):
            entry["id"] = msg["id"]
        if detail.get("total"):
            entry["current"] = int(detail.get("current", 0))
            entry["total"] = int(detail["total"])
            done = entry["current"] >= entry["total"]
            # Byte counts are throttled; status changes and the last count always pass.
            ctx.progress(entry, every=0.0 if done else 0.2, key=entry.get("id", ""))
            return
        if not entry.get("id"):
            entry["summary"] = entry["status"]
        ctx.progress(entry)

    return forward


@tasks_api.tracked("long.image_pull", retry_on=(images.Unreachable,))
def image_pull(ctx: tasks_api.TaskContext, ref: str) -> dict:
    result = images.pull(ctx.user, ref, progress=registry_progress(ctx))
    ctx.progress({"summary": result.get("Status") or f"pulled {ref}"})
    return result


@tasks_api.tracked("long.image_push", retry_on=(images.Unreachable,))
def image_push(ctx: tasks_api.TaskContext, ref: str) -> dict:
    result = images.push(ctx.user, ref, progress=registry_progress(ctx))
    ctx.progress({"summary": f"pushed {ref}: {result.get('Digest', '')}"})
    return result


class _Lines:
    """Build output bytes -> one progress entry per line (a partial line waits)."""

    def __init__(self, ctx: tasks_api.TaskContext) -> None:
        self.ctx = ctx
        self.buf = b""

    def __call__(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self.ctx.line(line.decode(errors="replace"))

    def flush(self) -> None:
        if self.buf:
            self.ctx.line(self.buf.decode(errors="replace"))
            self.buf = b""


@tasks_api.tracked("long.image_build")
def image_build(
    ctx: tasks_api.TaskContext,
    upload: str,
    tags: list[str],
    dockerfile: str = "",
    build_args: dict[str, str] | None = None,
    target: str = "",
    no_cache: bool = False,
) -> dict:
    out = _Lines(ctx)
    try:
        result = images.build(
            ctx.user,
            transfers.upload_path(upload),
            tags=tags,
            dockerfile=dockerfile,
            build_args=build_args,
            target=target,
            no_cache=no_cache,
            out=out,
        )
    finally:
        out.flush()
        transfers.discard(upload)
    ctx.progress({"summary": f"built {', '.join(result['Tags']) or result['Id'][:19]}"})
    return result


@tasks_api.tracked("long.image_import")
def image_import(ctx: tasks_api.TaskContext, upload: str, ref: str = "", mode: str = "load"):
    """``mode`` "load": a `docker save` / OCI archive; "rootfs": `docker import` of a tar."""
    try:
        ctx.progress({"summary": f"reading the archive ({transfers.size(upload)} bytes)"})
        if mode == "rootfs":
            res = images.import_tar(ctx.user, transfers.upload_path(upload), ref)
            names = res["RepoTags"] or [res["Id"]]
        else:
            names = images.load(ctx.user, transfers.upload_path(upload))
    finally:
        transfers.discard(upload)
    ctx.progress({"summary": "loaded " + ", ".join(names)})
    return {"Loaded": names}


@tasks_api.tracked("long.image_export")
def image_export(ctx: tasks_api.TaskContext, refs: list[str]) -> dict:
    dest = transfers.export_path(ctx.task_id)
    ctx.progress({"summary": f"writing {', '.join(refs)}"})
    size = images.save(ctx.user, refs, dest)
    ctx.progress({"summary": f"archive ready ({size} bytes)"})
    download = reverse("images:export_download", args=[ctx.task_id])
    return {"File": dest.name, "Size": size, "Refs": refs, "Download": download}


@tasks_api.tracked("long.image_prune")
def image_prune(ctx: tasks_api.TaskContext, all: bool = False) -> dict:
    result = images.prune(ctx.user, all=all)
    for line in result["Lines"]:
        ctx.line(line)
    ctx.progress({"summary": f"reclaimed {result['SpaceReclaimed']} bytes"})
    return {"Deleted": len(result["ImagesDeleted"]), "SpaceReclaimed": result["SpaceReclaimed"]}
