"""System: the overview's host facts, `system df`, and prune with a preview.

The preview applies the engine's own prune rules (docker's): stopped containers;
untagged images no container uses (every unused image with ``all``); unused
anonymous volumes (with ``volumes``). The prune itself is the engine's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from dashboard.services import engine_for
from engine.errors import EngineError, InvalidState
from engine.units import human_size

__all__ = ["EngineError", "InvalidState", "disk_usage", "host_usage", "overview", "preview_key",
           "prune", "prune_preview"]  # fmt: skip

LIST_CHANGED = "what would go changed since the confirmation was shown"


def host_usage() -> dict[str, Any]:
    """This host's load and memory now (the overview's "host CPU/memory").

    Read from /proc of the host the dashboard runs on: today the engine's host; a
    later multi-host issue moves this behind the engine's facade with the rest."""
    mem: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            k, _, v = line.partition(":")
            mem[k] = int(v.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        load = []
    total, avail = mem.get("MemTotal", 0), mem.get("MemAvailable", 0)
    ncpu = os.cpu_count() or 1
    return {
        "ncpu": ncpu,
        "load": load,
        "load_pct": round(100 * load[0] / ncpu) if load else None,
        "mem_total": total,
        "mem_used": total - avail,
        "mem_pct": round(100 * (total - avail) / total) if total else None,
    }


def disk_usage(user: Any) -> dict[str, Any]:
    """`system df`: per kind (images, containers, volumes) count, active, size,
    reclaimable (the same arithmetic as `berth system df`), plus the rows."""
    d = engine_for(user).system_df()
    imgs, ctrs, vols = d["Images"], d["Containers"], d["Volumes"]
    img_size = sum(i["UniqueSize"] for i in imgs) + max((i["SharedSize"] for i in imgs), default=0)
    kinds = [
        {
            "kind": "Images",
            "total": len(imgs),
            "active": sum(1 for i in imgs if i["Containers"]),
            "size": img_size,
            "reclaimable": sum(i["UniqueSize"] for i in imgs if not i["Containers"]),
        },
        {
            "kind": "Containers",
            "total": len(ctrs),
            "active": sum(1 for c in ctrs if c["State"] in ("running", "paused")),
            "size": sum(c["SizeRw"] for c in ctrs),
            "reclaimable": sum(
                c["SizeRw"] for c in ctrs if c["State"] not in ("running", "paused")
            ),
        },
        {
            "kind": "Volumes",
            "total": len(vols),
            "active": sum(1 for v in vols if v["Links"]),
            "size": sum(v["Size"] for v in vols),
            "reclaimable": sum(v["Size"] for v in vols if not v["Links"]),
        },
    ]
    for k in kinds:
        k["size_h"], k["reclaimable_h"] = human_size(k["size"]), human_size(k["reclaimable"])
    for i in imgs:
        i["size_h"], i["unique_h"] = human_size(i["Size"]), human_size(i["UniqueSize"])
    for c in ctrs:
        c["size_h"] = human_size(c["SizeRw"])
    for v in vols:
        v["size_h"] = human_size(v["Size"])
    return {"kinds": kinds, "images": imgs, "containers": ctrs, "volumes": vols}


def overview(user: Any) -> dict[str, Any]:
    eng = engine_for(user)
    info = eng.info()
    return {"info": info, "df": disk_usage(user), "host": host_usage()}


def prune_preview(user: Any, all_images: bool = False, volumes: bool = False) -> dict[str, list]:
    """What `system prune` would remove now, by kind (for the confirmation). Like the
    prune, it counts what the pruned containers held as unused."""
    eng = engine_for(user)
    everything = eng.containers(all=True)
    going = [c for c in everything if c.state in ("exited", "created")]
    staying = [c for c in everything if c.state not in ("exited", "created")]
    kept_images = {c.image_id for c in staying}
    kept_names = {c.name for c in staying}
    containers = [{"id": c.id[:12], "name": c.name, "state": c.state} for c in going]
    images = [
        {"id": i["Id"].removeprefix("sha256:")[:12], "tags": ", ".join(i["RepoTags"]) or "<none>",
         "size": human_size(i["UniqueSize"])}
        for i in eng.image_df()
        if (all_images or not i["RepoTags"]) and i["Id"] not in kept_images
    ]  # fmt: skip
    vols = []
    if volumes:
        for v in eng.list_volumes():
            anonymous = (v.get("Labels") or {}).get("com.docker.volume.anonymous") is not None
            users = set(eng.containers_using_volume(v["Name"]))
            if anonymous and not users & kept_names:
                vols.append({"name": v["Name"]})
    return {"containers": containers, "images": images, "volumes": vols}


def preview_key(doomed: dict[str, list]) -> str:
    """A short fingerprint of a preview: the confirmation carries it, and the prune
    goes ahead only while the preview is still the same."""
    ids = [sorted(c["id"] for c in doomed["containers"]), sorted(i["id"] for i in doomed["images"]),
           sorted(v["name"] for v in doomed["volumes"])]  # fmt: skip
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:24]


def prune(
    user: Any, all_images: bool = False, volumes: bool = False, expect: str | None = None
) -> dict[str, Any]:
    """The engine's prune; with ``expect`` (a preview_key) only if the preview still
    matches it, so that nothing goes that the confirmation did not list."""
    if expect is not None and preview_key(prune_preview(user, all_images, volumes)) != expect:
        raise InvalidState(f"nothing was pruned: {LIST_CHANGED}; look again and confirm")
    r = engine_for(user).system_prune(all=all_images, volumes=volumes)
    deleted_ctrs = r["Containers"].get("ContainersDeleted") or []
    out = {
        "containers": [c[:12] for c in deleted_ctrs],
        "images": list(r["Images"].get("Lines", [])),
        "volumes": list(r.get("Volumes", {}).get("VolumesDeleted", [])),
        "reclaimed": human_size(
            int(r["Images"].get("SpaceReclaimed", 0))
            + int(r.get("Volumes", {}).get("SpaceReclaimed", 0))
        ),
    }
    return out
