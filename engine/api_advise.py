"""The advise part of the engine facade: ``AdviseAPI``, mixed into ``engine.api.Engine``.

Read-only: the advisor inspects an image's layers or a Dockerfile and its
context and returns a plain dict (see ``engine.images.advise``), the same
report the CLI prints and the dashboard shows. Emits no events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.images.store import ImageStore


class AdviseAPI:
    if TYPE_CHECKING:  # provided by Engine
        images: ImageStore

    def advise_image(self, ref: str, top: int = 10) -> dict[str, Any]:
        """Size by layer, largest files and findings for image ``ref``."""
        from engine.images.advise import advise_image

        return advise_image(self.images, ref, top=top)

    def advise_dockerfile(
        self, path: str, context: str | None = None, top: int = 10
    ) -> dict[str, Any]:
        """Findings for a Dockerfile (a file, or a directory holding ``Dockerfile``);
        ``context`` defaults to the Dockerfile's directory."""
        from engine.images.advise_dockerfile import advise_dockerfile

        return advise_dockerfile(path, context=context, top=top, store=self.images)

    def advise(
        self, target: str, context: str | None = None, top: int = 10, kind: str | None = None
    ) -> dict[str, Any]:
        """``berth image advise TARGET``: a Dockerfile when TARGET is an existing
        path (or ``kind="dockerfile"``), an image reference otherwise."""
        from engine.images.advise import is_dockerfile_target

        if is_dockerfile_target(target, kind):
            return self.advise_dockerfile(target, context=context, top=top)
        return self.advise_image(target, top=top)
