"""Resolve ``-u USER[:GROUP]`` against the image's /etc/passwd and /etc/group.

The rootfs belongs to whoever built the image: its /etc/passwd may be a symlink
to ``/../../../etc/shadow``. Files are therefore read with
``engine.safepath.read_file_in_root`` (openat2 RESOLVE_IN_ROOT), which resolves
every symlink and ``..`` as if the rootfs were ``/`` (as the container itself
will see it), never reaching the host.

Semantics follow runc's/moby's ``GetExecUser``: the first matching passwd entry
wins; a numeric uid needs no entry (gid 0 then); supplementary groups come from
/etc/group only when no group is named explicitly.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import InvalidArgument, NotFound
from engine.safepath import read_file_in_root

MAX_ID = 2**31 - 1


def _read_optional(root: Path, path: str) -> str:
    """File text, or "" when the image has no usable such file.

    As runc does, a passwd/group file that cannot be opened counts as absent:
    names then fail to resolve and numeric ids pass through. Only path-shape
    problems (missing, not a directory on the way, a loop, not a regular file)
    are absorbed; anything else (EIO, EACCES...) propagates.
    """
    try:
        data = read_file_in_root(root, path)
    except (NotFound, InvalidArgument):
        return ""
    return data.decode("utf-8", "replace")


def _entries(text: str, min_fields: int) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        # NIS compat lines (+/-) and comments are not local entries.
        if not line or line[0] in "#+-":
            continue
        fields = line.split(":")
        if len(fields) >= min_fields:
            out.append(fields)
    return out


def _as_id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _checked_id(value: int, what: str, spec: str) -> int:
    if not 0 <= value <= MAX_ID:
        raise InvalidArgument(f"{what} {value} in {spec!r} is out of range 0..{MAX_ID}", obj=spec)
    return value


def resolve_user(rootfs: Path | str, user: str) -> tuple[int, int, list[int]]:
    """``(uid, gid, additional_gids)`` for a ``-u`` value in this rootfs.

    Accepts "", "name", "uid", "name:group", "uid:gid" (and mixes). An unknown
    user or group *name* -> InvalidArgument worded like Docker's.
    """
    root = Path(rootfs)
    user_arg, _, group_arg = (user or "").partition(":")
    uid_num = _as_id(user_arg)
    gid_num = _as_id(group_arg)

    passwd = _entries(_read_optional(root, "/etc/passwd"), 4)
    uid, gid, matched_name = 0, 0, ""
    for name, _pw, uid_s, gid_s, *_ in passwd:
        e_uid, e_gid = _as_id(uid_s), _as_id(gid_s)
        if e_uid is None or e_gid is None:
            continue
        if (
            (not user_arg and e_uid == 0)
            or (uid_num is not None and e_uid == uid_num)
            or name == user_arg
        ):
            uid, gid, matched_name = e_uid, e_gid, name
            break
    else:
        if user_arg:
            if uid_num is None:
                raise InvalidArgument(
                    f"unable to find user {user_arg}: no matching entries in passwd file",
                    obj=user_arg,
                )
            uid = _checked_id(uid_num, "uid", user)

    extra: list[int] = []
    if group_arg or matched_name:
        groups = _entries(_read_optional(root, "/etc/group"), 3)
        if group_arg:
            for name, _pw, gid_s, *_ in groups:
                e_gid = _as_id(gid_s)
                if e_gid is not None and (
                    e_gid == gid_num if gid_num is not None else name == group_arg
                ):
                    gid = e_gid
                    break
            else:
                if gid_num is None:
                    raise InvalidArgument(
                        f"unable to find group {group_arg}: no matching entries in group file",
                        obj=group_arg,
                    )
                gid = _checked_id(gid_num, "gid", user)
        else:
            # Supplementary groups only in the implicit form, as runc does.
            for fields in groups:
                members = fields[3].split(",") if len(fields) > 3 else []
                e_gid = _as_id(fields[2])
                if e_gid is not None and matched_name in members and e_gid not in extra:
                    extra.append(e_gid)
    return uid, gid, extra
