"""Volumes through the engine's facade: list (with users and sizes), create, inspect
with the containers using it, remove, and prune of exactly what the user confirmed."""

from __future__ import annotations

from typing import Any

from dashboard.services import engine_for
from engine.errors import EngineError, InvalidArgument
from engine.units import human_size

__all__ = ["EngineError", "InvalidArgument", "create", "exists", "inspect", "list_all",
           "parse_labels", "prune", "prune_preview", "remove"]  # fmt: skip

ANONYMOUS_LABEL = "com.docker.volume.anonymous"


def _row(eng: Any, v: dict) -> dict:
    users = eng.containers_using_volume(v["Name"])
    return {
        "name": v["Name"],
        "driver": v["Driver"],
        "created": v["CreatedAt"],
        "mountpoint": v["Mountpoint"],
        "labels": v.get("Labels") or {},
        "anonymous": ANONYMOUS_LABEL in (v.get("Labels") or {}),
        "users": users,
    }


def list_all(user: Any) -> list[dict]:
    eng = engine_for(user)
    return [_row(eng, v) for v in eng.list_volumes()]


def parse_labels(text: str) -> dict[str, str]:
    """One ``KEY=VALUE`` (or ``KEY``) per line."""
    labels = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        k, _, v = line.partition("=")
        if not k.strip():
            raise InvalidArgument(f"label on line {n} has no key: {line!r}")
        labels[k.strip()] = v.strip()
    return labels


def create(user: Any, name: str, labels: dict[str, str] | None = None) -> dict:
    """Create a named volume; Conflict-free like Docker (an existing one is returned),
    so the caller checks existence first when it wants to say so."""
    eng = engine_for(user)
    return _row(eng, eng.create_volume(name or None, labels=labels or {}))


def exists(user: Any, name: str) -> bool:
    try:
        engine_for(user).inspect_volume(name)
    except EngineError:
        return False
    return True


def inspect(user: Any, name: str) -> dict:
    eng = engine_for(user)
    raw = eng.inspect_volume(name)
    row = _row(eng, raw)
    row["size"] = human_size(eng.volume_size(name))
    row["raw"] = raw
    return row


def remove(user: Any, name: str, force: bool = False) -> None:
    engine_for(user).remove_volume(name, force=force)


def prune_preview(user: Any, all: bool = False) -> list[dict]:
    """What a prune would remove now: unused volumes, anonymous ones only unless ``all``."""
    eng = engine_for(user)
    out = []
    for v in eng.list_volumes():
        row = _row(eng, v)
        if not row["users"] and (all or row["anonymous"]):
            row["size"] = human_size(eng.volume_size(v["Name"]))
            out.append(row)
    return out


def prune(user: Any, names: list[str]) -> tuple[list[str], list[str]]:
    """Remove the confirmed volumes that are still unused; returns (removed, skipped
    with the reason). A volume a container took since the preview stays."""
    eng = engine_for(user)
    removed, skipped = [], []
    for name in names:
        try:
            eng.remove_volume(name)
        except EngineError as e:
            skipped.append(f"{name}: {e}")
        else:
            removed.append(name)
    return removed, skipped
