"""The build part of the Engine facade: ``BuildAPI``, mixed into ``engine.api.Engine``.

``build_image(opts, stream, out)`` runs a Dockerfile build (engine/build/):
``stream`` carries the context tar (or the Dockerfile) when ``opts.context``
is "-"; ``out(bytes)`` receives the build's output as it happens (step lines
and each RUN's output), for the CLI's stdout or a dashboard task's progress.
A failing RUN raises ``BuildStepFailed`` (step, command, exit code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from engine.build.options import BuildOptions, BuildResult


class BuildAPI:
    def build_image(
        self,
        opts: BuildOptions,
        stream: BinaryIO | None = None,
        out: Callable[[bytes], None] | None = None,
    ) -> BuildResult:
        from engine.build.executor import build

        return build(self, opts, stream, out)

    def prune_build_cache(self) -> int:
        """Drop cache entries (``builder prune``); returns how many. The images
        they pointed at stay until ``image prune`` removes them."""
        from engine.build.cache import BuildCache

        return BuildCache(self.config.root / "build", self.images).clear()  # type: ignore[attr-defined]
