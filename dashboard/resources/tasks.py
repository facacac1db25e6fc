"""Prunes as Celery tasks on the `long` queue: removing many images or volumes can take
a while, and the page that started one can be left and reopened (dashboard/live).

Each task records its audit entry when it ends (who started it and from where are
passed in), with what was actually removed, or the error.
"""

from __future__ import annotations

from typing import Any

from dashboard.accounts.audit import record
from dashboard.live import tasks_api
from dashboard.services import system, volumes


def _audit(ctx: Any, action: str, params: dict, address: str, result: str = "ok") -> None:
    record(None, action, "", params, result=result, user=ctx.user, address=address)


@tasks_api.tracked("long.system_prune")
def system_prune(ctx, all_images: bool = False, volumes: bool = False, address: str = "") -> dict:
    params = {"all": all_images, "volumes": volumes}
    ctx.line("removing stopped containers, then unused images" + (", volumes" if volumes else ""))
    try:
        went = system.prune(ctx.user, all_images, volumes)
    except Exception as e:
        _audit(ctx, "system.prune", params, address, f"error: {e}")
        raise
    for c in went["containers"]:
        ctx.line(f"deleted container {c}")
    for line in went["images"]:
        ctx.line(line)
    for v in went["volumes"]:
        ctx.line(f"deleted volume {v}")
    ctx.progress({"summary": f"reclaimed {went['reclaimed']}"})
    _audit(ctx, "system.prune", {**params, "removed": went}, address)
    return went


@tasks_api.tracked("long.volume_prune")
def volume_prune(ctx, names: list[str], all: bool = False, address: str = "") -> dict:
    """Remove exactly the confirmed volumes that are still unused."""
    removed, skipped = volumes.prune(ctx.user, names)
    for n in removed:
        ctx.line(f"deleted volume {n}")
    for s in skipped:
        ctx.line(f"kept {s}")
    ctx.progress({"summary": f"removed {len(removed)} volume(s), kept {len(skipped)}"})
    result = "ok" if not skipped else "partly: " + "; ".join(skipped)
    _audit(ctx, "volume.prune", {"all": all, "confirmed": names, "removed": removed},
           address, result)  # fmt: skip
    return {"removed": removed, "skipped": skipped}
