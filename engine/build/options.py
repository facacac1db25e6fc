"""Typed options and results of a build, and the error of a failing step."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import EngineError, InvalidArgument


@dataclass
class BuildOptions:
    """``berth build`` flags. ``context`` is a directory, or "-" for a tar (or a
    Dockerfile) on the stream given to ``Engine.build``. ``dockerfile`` is a host
    path (the CLI makes it absolute), "-" for the stream, or, for a tar context,
    a path inside the tar; "" means ``Dockerfile`` in the context."""

    context: str = "."
    dockerfile: str = ""
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    build_contexts: dict[str, str] = field(default_factory=dict)
    network: str = ""  # "" or "default": the engine's default network


@dataclass
class BuildResult:
    image_id: str
    tags: list[str]
    steps: int
    cached: int  # steps served from the cache
    warnings: list[str] = field(default_factory=list)


class BuildStepFailed(EngineError):
    """A RUN step exited non-zero: names the step, the command and its code."""

    def __init__(self, step: int, total: int, command: str, code: int):
        super().__init__(
            f"step {step}/{total}: the command '{command}' returned a non-zero code: {code}",
            obj=command,
        )
        self.step = step
        self.total = total
        self.command = command
        self.exit_code = code


def parse_pairs(items: list[str] | tuple[str, ...], what: str, env: dict | None = None) -> dict:
    """``K=V`` flags; ``--build-arg K`` alone takes K from ``env`` (Docker) when set there."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid {what} {item!r}: expected KEY=VALUE", obj=item)
        if not eq:
            if env is None:
                raise InvalidArgument(f"invalid {what} {item!r}: expected KEY=VALUE", obj=item)
            if key not in env:
                continue  # Docker drops a bare --build-arg that the environment lacks
            value = env[key]
        out[key] = value
    return out
