"""Prunes as Celery tasks on the `long` queue: removing many images or volumes can take
a while, and the page that started one can be left and reopened (dashboard/live).

The page that starts a prune writes its audit entry (who, from where, the confirmed
parameters, result "started", params["task"]); dashboard/live sets that entry's result
when the task ends, also when it fails or its worker dies. The task adds what was
actually removed.
"""

from __future__ import annotations

from typing import Any

from dashboard.live import tasks_api
from dashboard.services import system, volumes


def _add_to_audit(ctx: Any, params: dict, result: str = "") -> None:
    """What went, onto the entry the page wrote; a ``result`` here (a partial prune)
    stands, else the task's end gives "ok"."""
    from dashboard.accounts.audit import mask
    from dashboard.accounts.models import AuditEntry

    for e in AuditEntry.objects.filter(params__task=ctx.task_id):
        e.params = mask({**e.params, **params})
        if result:
            e.result = result[:255]
        e.save(update_fields=["params", "result"])


@tasks_api.tracked("long.system_prune")
def system_prune(
    ctx, all_images: bool = False, volumes: bool = False, expect: str | None = None
) -> dict:
    """``expect``: the confirmed list's preview_key (nothing goes if it changed since)."""
    ctx.line("removing stopped containers, then unused images" + (", volumes" if volumes else ""))
    went = system.prune(ctx.user, all_images, volumes, expect)
    for c in went["containers"]:
        ctx.line(f"deleted container {c}")
    for line in went["images"]:
        ctx.line(line)
    for v in went["volumes"]:
        ctx.line(f"deleted volume {v}")
    ctx.progress({"summary": f"reclaimed {went['reclaimed']}"})
    _add_to_audit(ctx, {"removed": went})
    return went


@tasks_api.tracked("long.volume_prune")
def volume_prune(ctx, names: list[str]) -> dict:
    """Remove exactly the confirmed volumes that are still unused."""
    removed, skipped = volumes.prune(ctx.user, names)
    for n in removed:
        ctx.line(f"deleted volume {n}")
    for s in skipped:
        ctx.line(f"kept {s}")
    ctx.progress({"summary": f"removed {len(removed)} volume(s), kept {len(skipped)}"})
    _add_to_audit(ctx, {"removed": removed}, "partly: " + "; ".join(skipped) if skipped else "")
    return {"removed": removed, "skipped": skipped}
