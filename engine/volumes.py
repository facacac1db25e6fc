"""Named and anonymous volumes (the ``local`` driver), as plain functions.

A volume is a row in the ``volumes`` table plus ``<volumes_dir>/<name>/_data``,
the directory bind-mounted into containers (Docker's layout, so ``Mountpoint``
looks familiar). Nothing here knows about containers: callers pass ``users``,
a function giving the names of the containers that use a volume, so this
module stays free of any Engine dependency. Events are the caller's job.

Creation and removal run under ``volumes.lock`` so two clients creating the
same name get one volume, and a volume cannot be created and removed at once.

Local driver options ``type``, ``device`` and ``o`` (e.g. a tmpfs volume) are
validated and stored like Docker does, but not mounted yet: such a volume is
an ordinary directory for now.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from engine import safepath
from engine.config import EngineConfig
from engine.errors import Conflict, EngineError, InvalidArgument, NotFound
from engine.locks import file_lock
from engine.state import StateDB, dumps

# Docker's rule (moby: RestrictedNameChars + "+"): at least two characters.
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
# Docker 23+ labels anonymous volumes so prune can tell them apart.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
# moby volume/local: the options the local driver understands, and their companions.
_VALID_OPTS = ("type", "device", "o", "size")
_MANDATORY_OPTS = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
_SEEDED_MARKER = "seeded"  # beside _data, not in it: invisible to containers

Users = Callable[[str], list[str]]


# -- layout ------------------------------------------------------------------------------


def volume_dir(config: EngineConfig, name: str) -> Path:
    return config.volumes_dir / name


def mountpoint(config: EngineConfig, name: str) -> Path:
    return config.volumes_dir / name / "_data"


@contextmanager
def _volumes_lock(config: EngineConfig) -> Iterator[None]:
    with file_lock(config.locks_dir / "volumes.lock"):
        yield


# -- validation ----------------------------------------------------------------------------


def validate_name(name: str) -> None:
    # 255: the name is a directory name; Docker has no other upper bound.
    if not NAME_RE.match(name) or len(name) > 255:
        raise InvalidArgument(
            f"{name!r} includes invalid characters for a local volume name, only "
            f'"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path",
            obj=name,
        )


def validate_options(driver: str, options: dict[str, str]) -> None:
    if driver != "local":
        raise InvalidArgument(f"volume driver {driver!r} is not supported (only 'local')")
    for key in options:
        if key not in _VALID_OPTS:
            raise InvalidArgument(f'invalid option: "{key}"')
    if "size" in options:
        # Docker needs an XFS project quota for this; we have no quota support.
        raise InvalidArgument("quota size requested but no quota support")
    for key, needs in _MANDATORY_OPTS.items():
        if key in options:
            for other in needs:
                if other not in options:
                    raise InvalidArgument(f'missing required option: "{other}"')


# -- records -------------------------------------------------------------------------------


def _rfc3339(ts: float) -> str:
    # Go's time.RFC3339 in local time: whole seconds, "Z" for UTC.
    text = datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _record(config: EngineConfig, row: Any) -> dict[str, Any]:
    """Docker's ``volume inspect`` shape (anonymous ones carry ANONYMOUS_LABEL)."""
    labels = json.loads(row["labels"])
    options = json.loads(row["options"])
    return {
        "CreatedAt": _rfc3339(row["created"]),
        "Driver": row["driver"],
        # Current Docker prints null (not {}) for a volume without labels/options.
        "Labels": labels or None,
        "Mountpoint": str(mountpoint(config, row["name"])),
        "Name": row["name"],
        "Options": options or None,
        "Scope": "local",
    }


def _row(db: StateDB, name: str) -> Any:
    return db.one("SELECT * FROM volumes WHERE name=?", (name,))


def exists(db: StateDB, name: str) -> bool:
    return _row(db, name) is not None


def inspect_volume(config: EngineConfig, db: StateDB, name: str) -> dict[str, Any]:
    row = _row(db, name)
    if row is None:
        raise NotFound(f"no such volume: {name}", obj=name)
    return _record(config, row)


# -- create ------------------------------------------------------------------------------


def create_volume(
    config: EngineConfig,
    db: StateDB,
    name: str | None,
    driver: str = "local",
    labels: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
    anonymous: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Create a volume; returns (record, created).

    An existing volume is returned as is (``created`` False), labels and options unchanged,
    as Docker does, so ``volume create x`` and ``run -v x:/d`` can race safely.
    """
    labels = dict(labels or {})
    options = dict(options or {})
    name = name or secrets.token_hex(32)
    validate_name(name)
    validate_options(driver, options)
    if anonymous:
        labels.setdefault(ANONYMOUS_LABEL, "")
    with _volumes_lock(config):
        row = _row(db, name)
        if row is not None:
            # Only "local" exists, so the driver always matches (Docker: Conflict otherwise).
            return _record(config, row), False
        vdir = volume_dir(config, name)
        data = mountpoint(config, name)
        # 0701 like Docker: containers' users may traverse to their mounts, not list them.
        config.volumes_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(config.volumes_dir, 0o701)
        # A directory without a row is left over by a create that died between the
        # two steps (we hold the lock): adopt it rather than destroy data.
        made = not vdir.exists()
        try:
            data.mkdir(parents=True, exist_ok=True)
            os.chmod(data, 0o755)  # explicit: the umask must not decide
            with db.write() as c:
                c.execute(
                    "INSERT INTO volumes(name, driver, created, labels, options, anonymous)"
                    " VALUES (?,?,?,?,?,?)",
                    (name, driver, time.time(), dumps(labels), dumps(options), int(anonymous)),
                )
        except BaseException:
            if made:
                shutil.rmtree(vdir, ignore_errors=True)
            raise
        return _record(config, _row(db, name)), True


# -- list and filters --------------------------------------------------------------------


def parse_filters(filters: list[str]) -> dict[str, list[str]]:
    """``["k=v", ...]`` -> {k: [v, ...]} (values of one key are OR-ed, keys AND-ed)."""
    out: dict[str, list[str]] = {}
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep:
            raise InvalidArgument(f"bad format of filter (expected name=value): {f!r}")
        out.setdefault(key.strip().lower(), []).append(value)
    return out


def _bool_filter(key: str, values: list[str]) -> bool:
    truth = {"true": True, "1": True, "false": False, "0": False}
    got = {truth.get(v.lower()) for v in values}
    if None in got:
        raise InvalidArgument(f"invalid filter '{key}={values[0]}'")
    if len(got) > 1:
        raise InvalidArgument(f"conflicting filter values for '{key}'")
    return got.pop()  # type: ignore[return-value]


def _label_match(labels: dict[str, str], spec: str) -> bool:
    key, sep, value = spec.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _name_match(name: str, pattern: str) -> bool:
    # Docker matches names as a regular expression (so plain text is a substring).
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def _natural_key(name: str) -> list[Any]:
    # docker CLI sorts volume ls with sortorder.NaturalLess: "v2" before "v10".
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


def list_volumes(
    config: EngineConfig, db: StateDB, filters: list[str], users: Users
) -> list[dict[str, Any]]:
    want = parse_filters(filters)
    for key in want:
        if key not in ("dangling", "name", "label", "driver"):
            raise InvalidArgument(f"invalid filter '{key}'")
    dangling = _bool_filter("dangling", want["dangling"]) if "dangling" in want else None
    out = []
    for row in db.query("SELECT * FROM volumes"):
        rec = _record(config, row)
        labels = rec["Labels"] or {}
        if "name" in want and not any(_name_match(rec["Name"], p) for p in want["name"]):
            continue
        if "driver" in want and rec["Driver"] not in want["driver"]:
            continue
        if not all(_label_match(labels, spec) for spec in want.get("label", [])):
            continue
        if dangling is not None and (not users(rec["Name"])) != dangling:
            continue
        out.append(rec)
    out.sort(key=lambda r: _natural_key(r["Name"]))
    return out


# -- remove and prune ----------------------------------------------------------------------


def remove_volume(
    config: EngineConfig, db: StateDB, name: str, users: Users, force: bool = False
) -> dict[str, Any] | None:
    """Remove a volume; returns its record, or None when ``force`` and it was missing.

    ``force`` only forgives a missing volume: Docker too refuses to remove one in use.
    """
    with _volumes_lock(config):
        row = _row(db, name)
        if row is None:
            if force:
                return None
            raise NotFound(f"no such volume: {name}", obj=name)
        in_use = users(name)
        if in_use:
            # Go's %v of a []string: "[a b]".
            raise Conflict(f"remove {name}: volume is in use - [{' '.join(in_use)}]", obj=name)
        rec = _record(config, row)
        vdir = volume_dir(config, name)
        # Rename first (atomic), then forget the row, then delete: a crash never leaves
        # a row whose data is half gone, only a hidden trash directory.
        trash = config.volumes_dir / f".{name}.removing-{secrets.token_hex(4)}"
        moved = False
        if vdir.exists():
            os.rename(vdir, trash)
            moved = True
        try:
            with db.write() as c:
                c.execute("DELETE FROM volumes WHERE name=?", (name,))
        except BaseException:
            if moved:
                os.rename(trash, vdir)
            raise
    if moved:
        _rmtree(trash)
    return rec


def _rmtree(path: Path) -> None:
    try:
        shutil.rmtree(path)  # fd-based on Linux: never follows links out of the tree
    except OSError as e:
        raise EngineError(f"removing {path}: {e.strerror}", obj=str(path), errno=e.errno) from None


def prune_volumes(
    config: EngineConfig,
    db: StateDB,
    users: Users,
    all: bool = False,
    filters: list[str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Remove unused volumes; returns (removed records, bytes reclaimed).

    Docker 23+: only anonymous volumes unless ``all`` (or the filter ``all=true``).
    Filters ``label=K[=V]`` and ``label!=K[=V]`` narrow the set.
    """
    want = parse_filters(filters or [])
    for key in want:
        if key not in ("label", "label!", "all"):
            raise InvalidArgument(f"invalid filter '{key}'")
    if "all" in want:
        all = all or _bool_filter("all", want["all"])
    removed: list[dict[str, Any]] = []
    reclaimed = 0
    rows = sorted(db.query("SELECT * FROM volumes"), key=lambda r: _natural_key(r["name"]))
    for row in rows:
        if not all and not row["anonymous"]:
            continue
        labels = json.loads(row["labels"])
        if not all_labels_match(labels, want.get("label", []), want.get("label!", [])):
            continue
        name = row["name"]
        if users(name):
            continue
        size = volume_size(config, name)
        try:
            rec = remove_volume(config, db, name, users, force=True)
        except Conflict:
            continue  # a container took it between our check and the lock
        if rec is not None:
            removed.append(rec)
            reclaimed += size
    return removed, reclaimed


def all_labels_match(labels: dict[str, str], want: list[str], not_want: list[str]) -> bool:
    return all(_label_match(labels, s) for s in want) and not any(
        _label_match(labels, s) for s in not_want
    )


# -- size ----------------------------------------------------------------------------------


def volume_size(config: EngineConfig, name: str) -> int:
    """Bytes used by the volume's files, like Docker's ``directory.Size``.

    Sizes of non-directories (links not followed), hardlinked files counted once.
    """
    root = mountpoint(config, name)
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(root)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue  # vanished or unreadable: sizes are best effort
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                    continue
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


# -- seeding -------------------------------------------------------------------------------


def seed_volume(
    config: EngineConfig, db: StateDB, name: str, rootfs: Path, path_in_root: str
) -> bool:
    """Copy ``path_in_root`` of a container rootfs into an empty volume, once.

    What Docker does when a volume is first mounted over image content. Paths are
    resolved inside ``rootfs`` (a symlink pointing at a host path lands inside the
    rootfs), links inside the tree are copied as links, owners, modes and xattrs
    are kept, and the volume root takes the source directory's owner and mode.
    Returns whether anything was copied. A volume that was seeded once, or that
    holds anything, is never seeded (again).
    """
    if not exists(db, name):
        raise NotFound(f"no such volume: {name}", obj=name)
    marker = volume_dir(config, name) / _SEEDED_MARKER
    data = mountpoint(config, name)
    # Per-volume lock: two containers starting on one new volume copy only once,
    # and a long copy does not hold up every other volume operation.
    with file_lock(config.locks_dir / "volumes" / f"{name}.lock"):
        if marker.exists() or not _is_empty(data):
            return False
        try:
            src = safepath.stat_in_root(rootfs, path_in_root)
        except EngineError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return False  # nothing at that path in the image: nothing to copy
            raise
        if not stat.S_ISDIR(src.st_mode):
            return False  # Docker copies directories only
        try:
            _copy_tree(rootfs, path_in_root, data)
            os.chown(data, src.st_uid, src.st_gid)
            os.chmod(data, stat.S_IMODE(src.st_mode))  # after chown, which clears setgid
        except BaseException:
            _empty_dir(data)  # it was empty: a half copy would block any later seed
            raise
        marker.write_text("1\n")
        return True


def _copy_tree(rootfs: Path, path_in_root: str, dest: Path) -> None:
    """Stream ``copy_out(rootfs, path/.)`` into ``copy_in(dest)`` through a pipe."""
    # Imported here: the tar machinery is not needed by `berth volume ls` and friends.
    from engine.images.layers import copy_in, copy_out

    rfd, wfd = os.pipe()
    errors: list[BaseException] = []

    def produce(out: BinaryIO) -> None:
        try:
            with out:
                copy_out(rootfs, path_in_root.rstrip("/") + "/.", out)
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    writer = threading.Thread(target=produce, args=(os.fdopen(wfd, "wb"),), daemon=True)
    writer.start()
    try:
        with os.fdopen(rfd, "rb") as stream:
            copy_in(dest, "/", stream, preserve_owner=True)
    except BaseException:
        writer.join()  # the read end is closed now, so a blocked writer gets EPIPE
        # A reader failure makes the writer fail with EPIPE: report the reader's error.
        # A writer failure shows up here as a truncated tar: report the writer's.
        if errors and _errno_of(errors[0]) != errno.EPIPE:
            raise errors[0] from None
        raise
    writer.join()
    if errors:
        raise errors[0]


def _errno_of(e: BaseException) -> int | None:
    return getattr(e, "errno", None)


def _is_empty(path: Path) -> bool:
    with os.scandir(path) as it:
        return next(it, None) is None


def _empty_dir(path: Path) -> None:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass
