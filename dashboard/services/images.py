"""Images: what the images pages and their Celery tasks ask of the engine.

Reads and quick changes (list, history, inspect, tag, remove) run in the web process;
pull, push, build, import, export and prune run in tasks (dashboard/images/tasks.py),
which pass a ``progress(dict)`` callable for Docker-shaped progress messages or a
``line(text)`` callable for build output.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dashboard.services import engine_for

# The error types views catch to show a message instead of a 500, and the one a task
# retries (a registry that cannot be reached: a network hiccup, a registry restarting).
from engine.errors import EngineError  # noqa: F401  (re-exported)
from engine.registry.errors import Unreachable  # noqa: F401  (re-exported)


def check_reference(ref: str, what: str = "image reference") -> str:
    """A reference as typed (``busybox``, ``127.0.0.1:5000/x/y:1``), checked; raises
    InvalidArgument naming the problem."""
    from engine.errors import InvalidArgument
    from engine.images import reference

    text = (ref or "").strip()
    if not text:
        raise InvalidArgument(f"an {what} is required")
    if any(c.isspace() for c in text):
        raise InvalidArgument(f"invalid {what} {text!r}: contains spaces", obj=text)
    reference.parse_reference(text)
    return text


def list_images(user: Any, all: bool = False) -> list[dict]:
    return engine_for(user).list_images(all=all)


def images_by_id(user: Any) -> list[dict]:
    """One entry per image (rows of the same image merged): what the list page shows."""
    out: dict[str, dict] = {}
    for row in engine_for(user).list_images(all=True):
        img = out.setdefault(
            row["FullID"],
            {**row, "Names": []},
        )
        if row["Repository"] != "<none>":
            img["Names"].append(f"{row['Repository']}:{row['Tag']}")
    return list(out.values())


def inspect(user: Any, ref: str) -> dict:
    return engine_for(user).inspect_image(ref)


def history(user: Any, ref: str) -> list[dict]:
    return engine_for(user).image_history(ref)


def tag(user: Any, src: str, dst: str) -> dict:
    return engine_for(user).tag_image(src, dst)


def remove(user: Any, ref: str, force: bool = False) -> list[str]:
    return engine_for(user).remove_image(ref, force=force)


def prune_preview(user: Any, all: bool = False) -> list[dict]:
    """What ``prune(all)`` would remove now: images not used by any container that are
    untagged (every unused image with ``all``), as list rows."""
    return [
        img
        for img in images_by_id(user)
        if (all or img["Dangling"] or not img["RepoTags"]) and img["Containers"] == "0"
    ]


def prune(user: Any, all: bool = False) -> dict:
    return engine_for(user).prune_images(all=all)


def pull(user: Any, ref: str, progress: Callable[[dict], object] | None = None) -> dict:
    return engine_for(user).pull_image(ref, progress=progress)


def push(user: Any, ref: str, progress: Callable[[dict], object] | None = None) -> dict:
    return engine_for(user).push_image(ref, progress=progress)


def build(
    user: Any,
    source: Path,
    *,
    tags: list[str],
    dockerfile: str = "",
    build_args: dict[str, str] | None = None,
    target: str = "",
    no_cache: bool = False,
    out: Callable[[bytes], None] | None = None,
) -> dict:
    """Build from ``source``: a context tar, or a Dockerfile alone (the builder tells
    them apart); ``dockerfile`` names the Dockerfile inside a tar."""
    from engine.build.options import BuildOptions

    opts = BuildOptions(
        context="-",
        dockerfile=dockerfile,
        tags=list(tags),
        build_args=dict(build_args or {}),
        target=target,
        no_cache=no_cache,
    )
    with open(source, "rb") as stream:
        res = engine_for(user).build_image(opts, stream, out)
    return {
        "Id": res.image_id,
        "Tags": list(res.tags),
        "Steps": res.steps,
        "Cached": res.cached,
        "Warnings": list(res.warnings),
    }


def import_tar(user: Any, source: Path, ref: str = "", message: str = "") -> dict:
    with open(source, "rb") as stream:
        return engine_for(user).import_image(stream, ref or None, message=message)


def load(user: Any, source: Path) -> list[str]:
    with open(source, "rb") as stream:
        return engine_for(user).load_images(stream)


def save(user: Any, refs: list[str], dest: Path) -> int:
    """``docker save`` into ``dest`` (written to a temp name, renamed when complete);
    returns its size."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        with open(tmp, "wb") as out:
            engine_for(user).save_images(refs, out)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest.stat().st_size
