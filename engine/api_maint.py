"""MaintAPI: `system df`, `system prune` and `system boot` across every area."""

from __future__ import annotations

import os
from pathlib import Path


def _tree_size(path: Path) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


class MaintAPI:
    def system_df(self) -> dict:
        """Docker's `system df -v` data: images (shared-layer accounting), containers, volumes."""
        from engine.containers.records import Paths

        images = self.image_df()
        containers = []
        for c in self.containers(all=True):
            size = _tree_size(Paths(self.config, c.id).upper)
            containers.append(
                {
                    "Id": c.id,
                    "Names": c.name,
                    "Image": c.image_ref,
                    "State": c.state,
                    "SizeRw": size,
                }
            )
        volumes = []
        for v in self.list_volumes([]):
            volumes.append(
                {
                    "Name": v["Name"],
                    "Size": self.volume_size(v["Name"]),
                    "Links": len(self.containers_using_volume(v["Name"])),
                }
            )
        # Every distinct layer once, however many images share it (Docker's LayersSize).
        layers: dict[str, int] = {}
        for rec in self.images.list(all=True):
            for c in rec.chain_ids:
                if c not in layers:
                    info = self.images.layers.get(c)
                    layers[c] = info.size if info else 0
        return {
            "LayersSize": sum(layers.values()),
            "Images": images,
            "Containers": containers,
            "Volumes": volumes,
        }

    def system_prune(self, all: bool = False, volumes: bool = False) -> dict:
        """Stopped containers, then (dangling or all unused) images, then (with
        ``volumes``) unused anonymous volumes — Docker's order, so what the
        removed containers held becomes prunable in the same pass."""
        report: dict = {"Containers": self.prune_containers()}
        report["Images"] = self.prune_images(all=all)
        if volumes:
            report["Volumes"] = self.prune_volumes()
        self.emit("system", "prune", "", all=str(all), volumes=str(volumes))
        return report

    def system_boot(self) -> dict:
        from engine.system.boot import boot

        return boot(self)
