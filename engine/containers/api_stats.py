"""ContainerStatsAPI: stats, update and anatomy -- the facade side (see engine/api.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept out of the import path of every CLI command
    from engine.containers.records import Container
    from engine.containers.update import UpdateOptions


class ContainerStatsAPI:
    def container_stats(self, ref: str, prev: dict | None = None) -> dict[str, Any]:
        """One reading in Docker's stats JSON shape (``GET /containers/{id}/stats``).

        ``prev`` is an earlier reading of the same container; its cpu_stats
        become ``precpu_stats`` (zeros without it, like Docker's one-shot).
        """
        from engine.containers import stats

        return stats.sample(self, self.get_container(ref), prev)

    def stats_rows(
        self,
        refs: list[str] | None,
        prev: dict[str, dict],
        *,
        all: bool = False,
        no_trunc: bool = False,
    ) -> list[dict[str, str]]:
        """Rows of ``docker stats`` (fields of its ``--format``) for the CLI and the dashboard.

        No ``refs``: every running container (with ``all``, every container).
        ``prev`` maps container ID to its previous reading and is updated in
        place: pass the same dict every round to stream. A container seen for
        the first time is read twice, 0.5 s apart, so its CPU % is real.
        Named containers that are not running show zeros, like docker.
        """
        from engine.containers import stats

        if refs:
            targets = [(r, self.get_container(r)) for r in refs]
        else:
            targets = [("", c) for c in self.containers(all=all)]
        # Forget containers that left, so a long-running stream does not grow.
        for cid in set(prev) - {c.id for _, c in targets}:
            del prev[cid]
        return stats.rows(self, targets, prev, no_trunc=no_trunc)

    def update_container(self, ref: str, opts: UpdateOptions) -> Container:
        """``docker update``: live on the cgroup when running, and stored for the next start."""
        from engine.containers import update

        return update.update(self, ref, opts)

    def container_anatomy(self, ref: str) -> dict[str, Any]:
        """Namespaces, cgroup limits vs use, capabilities/seccomp, rootfs layers, mounts,
        interfaces and processes of a running container, all read from the kernel."""
        from engine.containers import anatomy

        return anatomy.anatomy(self, self.get_container(ref))
