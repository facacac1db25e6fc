"""Linux capabilities: names, the host's bounding set, and --cap-add/--cap-drop.

A container can never hold a capability the engine's own process lacks in its
bounding set: the runtime would fail deep inside ``capset`` with a bare EPERM.
So we check against the bounding set up front and name the capability instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.errors import InvalidArgument

# Index = capability bit number (linux/capability.h), up to CAP_LAST_CAP 40.
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
CAP_BITS: dict[str, int] = {name: bit for bit, name in enumerate(CAPABILITIES)}

# Docker's (and Podman's) default set for a non-privileged container.
DEFAULT_CAPS: tuple[str, ...] = tuple(
    sorted(
        (
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ),
        key=CAP_BITS.__getitem__,
    )
)

ALL = "ALL"


def normalize_cap(name: str) -> str:
    """``net_admin`` / ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``; ``all`` -> ``ALL``."""
    n = name.strip().upper()
    if n == ALL:
        return ALL
    if not n.startswith("CAP_"):
        n = "CAP_" + n
    if n not in CAP_BITS:
        raise InvalidArgument(f"unknown capability {name!r}", obj=name)
    return n


def caps_from_mask(mask: int) -> set[str]:
    """Capability names for the bits set in ``mask`` (unknown high bits ignored)."""
    return {name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1}


def caps_to_mask(caps: Iterable[str]) -> int:
    mask = 0
    for c in caps:
        mask |= 1 << CAP_BITS[normalize_cap(c)]
    return mask


def host_bounding_set(status_path: str = "/proc/self/status") -> set[str]:
    """The capabilities this process may ever hold (``CapBnd``), by name."""
    with open(status_path, encoding="ascii") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return caps_from_mask(int(line.split(":", 1)[1].strip(), 16))
    raise InvalidArgument(f"no CapBnd line in {status_path}", obj=status_path)


def _sorted(caps: Iterable[str]) -> list[str]:
    return sorted(set(caps), key=CAP_BITS.__getitem__)


def resolve_caps(
    add: Iterable[str] = (),
    drop: Iterable[str] = (),
    privileged: bool = False,
    *,
    bounding: set[str] | None = None,
) -> list[str]:
    """The container's capabilities after --cap-add/--cap-drop/--privileged.

    Follows Docker's rules: ``--cap-add ALL`` starts from everything (minus the
    drops), ``--cap-drop ALL`` keeps only the adds, otherwise default - drop +
    add. "Everything" here is the host's bounding set, not every capability the
    kernel knows. Unlike Docker, drops still apply with --privileged (as Podman).
    Returned sorted by bit number, ``CAP_`` names.
    """
    if bounding is None:
        bounding = host_bounding_set()
    adds = {normalize_cap(c) for c in add}
    drops = {normalize_cap(c) for c in drop}

    missing = sorted(adds - bounding - {ALL}, key=CAP_BITS.__getitem__)
    if missing:
        raise InvalidArgument(
            f"cannot add capability {', '.join(missing)}: the host's capability bounding set "
            f"lacks it (the engine itself runs without it, so no container can have it)",
            obj=missing[0],
        )

    if privileged or ALL in adds:
        return _sorted(bounding - drops)
    if ALL in drops:
        return _sorted(adds)
    # A default cap the host lacks is left out quietly: the user did not ask for it
    # by name, and failing every container on such a host would help no one.
    base = set(DEFAULT_CAPS) & bounding
    return _sorted((base - drops) | adds)
