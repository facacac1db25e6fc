"""The volumes part of the Engine facade: engine.volumes plus events and in-use checks.

The host class provides ``config``, ``db`` and ``emit``; ``containers_using_volume``
(names of the containers that mount a volume) comes from ContainersAPI when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine._lazy import lazy

volumes = lazy("engine.volumes")

if TYPE_CHECKING:
    from engine.config import EngineConfig
    from engine.state import StateDB


class VolumesAPI:
    # Provided by Engine (declared only, so the MRO never finds a stub here).
    config: EngineConfig
    db: StateDB
    if TYPE_CHECKING:

        def emit(self, type_: str, action: str, obj_id: str, **attrs: object) -> int: ...

    def _volume_users(self, name: str) -> list[str]:
        # ContainersAPI may not be mixed in (tests, early bring-up): nothing uses volumes then.
        users = getattr(self, "containers_using_volume", None)
        return list(users(name)) if users else []

    def create_volume(
        self,
        name: str | None = None,
        driver: str = "local",
        labels: dict[str, str] | None = None,
        options: dict[str, str] | None = None,
        anonymous: bool = False,
    ) -> dict[str, Any]:
        """Create (or return the existing) volume; Docker's inspect dict."""
        rec, created = volumes.create_volume(
            self.config, self.db, name, driver, labels, options, anonymous
        )
        if created:
            self.emit("volume", "create", rec["Name"], driver=rec["Driver"], name=rec["Name"])
        return rec

    def list_volumes(self, filters: list[str] | None = None) -> list[dict[str, Any]]:
        """Filters: dangling=true|false, name=, label=K[=V], driver=."""
        return volumes.list_volumes(self.config, self.db, filters or [], self._volume_users)

    def inspect_volume(self, name: str) -> dict[str, Any]:
        return volumes.inspect_volume(self.config, self.db, name)

    def remove_volume(self, name: str, force: bool = False) -> None:
        rec = volumes.remove_volume(self.config, self.db, name, self._volume_users, force)
        if rec is not None:
            self.emit("volume", "destroy", name, driver=rec["Driver"], name=name)

    def prune_volumes(self, all: bool = False, filters: list[str] | None = None) -> dict[str, Any]:
        """Remove unused volumes (anonymous ones only unless ``all``)."""
        removed, reclaimed = volumes.prune_volumes(
            self.config, self.db, self._volume_users, all, filters
        )
        for rec in removed:
            self.emit("volume", "destroy", rec["Name"], driver=rec["Driver"], name=rec["Name"])
        self.emit("volume", "prune", "", reclaimed=reclaimed, count=len(removed))
        return {"VolumesDeleted": [r["Name"] for r in removed], "SpaceReclaimed": reclaimed}

    def volume_size(self, name: str) -> int:
        volumes.inspect_volume(self.config, self.db, name)  # NotFound for a bad name
        return volumes.volume_size(self.config, name)

    def seed_volume(self, name: str, rootfs: Path, path_in_root: str) -> bool:
        """Copy image content at ``path_in_root`` into the empty volume, once."""
        return volumes.seed_volume(self.config, self.db, name, rootfs, path_in_root)
