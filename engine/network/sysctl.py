"""Per-namespace sysctls: ip_forward, route_localnet and friends.

``/proc/sys/net`` shows the network namespace of the process that opens it,
so a value is read or written inside a forked child that has setns()ed into
the target namespace (engine.netns.run_in_netns); the calling process never
switches namespaces (it may be threaded). With netns "" the current
namespace is used directly.

``netns`` is a name under /run/netns ("bt1n") or a namespace file path
("/proc/PID/ns/net").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from engine.errors import EngineError, HostNotReady, InvalidArgument, NotFound

__all__ = ["ensure_ip_forward", "get", "ip_forward", "route_localnet", "set"]

T = TypeVar("T")

_PART_RE = re.compile(r"^[A-Za-z0-9_.:@+-]+$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _path(key: str) -> str:
    """``net.ipv4.ip_forward`` or ``net/ipv4/ip_forward`` -> its /proc/sys path.

    Like sysctl(8): with a '/' in the key the dots are literal, which is how a
    key naming an interface with a dot (``eth0.100``) is written.
    """
    parts = key.split("/") if "/" in key else key.split(".")
    if not key or any(p in ("", ".", "..") or not _PART_RE.match(p) for p in parts):
        raise InvalidArgument(f"invalid sysctl key {key!r}", obj=str(key))
    return "/proc/sys/" + "/".join(parts)


def _run(netns: str, fn: Callable[[], T]) -> T:
    if not netns:
        return fn()
    from engine.netns import netns_path, run_in_netns

    path = netns if netns.startswith("/") else netns_path(netns)
    return run_in_netns(path, fn)


def _read(path: str, key: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        raise NotFound(f"sysctl {key} does not exist", obj=key) from None
    except OSError as e:
        raise EngineError(f"cannot read sysctl {key}: {e.strerror}", obj=key, errno=e.errno) from e


def _write(path: str, key: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        raise NotFound(f"sysctl {key} does not exist", obj=key) from None
    except OSError as e:
        # EACCES/EPERM/EROFS: /proc/sys mounted read-only or no CAP_NET_ADMIN.
        cls = HostNotReady if e.errno in (1, 13, 30) else EngineError
        raise cls(
            f"cannot set sysctl {key}={value}: {e.strerror} (errno {e.errno})",
            obj=key,
            errno=e.errno,
        ) from e


def get(netns: str, key: str) -> str:
    """The sysctl's current value in the namespace, as text without the newline."""
    path = _path(key)
    return _run(netns, lambda: _read(path, key))


def set(netns: str, key: str, value: str | int) -> bool:  # noqa: A001 - the brief's name
    """Set the sysctl in the namespace; True if the value was different before.

    Read and write happen in the same child, so the answer is about this call.
    """
    path = _path(key)
    text = str(value)

    def apply() -> bool:
        if _read(path, key) == text:
            return False
        _write(path, key, text)
        return True

    return _run(netns, apply)


def ip_forward(netns: str) -> bool:
    """Whether IPv4 forwarding is on in the namespace (for `berth info`, the doctor)."""
    return get(netns, "net.ipv4.ip_forward") == "1"


def ensure_ip_forward(netns: str) -> bool:
    """Turn IPv4 forwarding on in the namespace; True if it was off.

    Bridge networks need it for NAT and published ports. It is left on when
    the last network goes, as Docker and Podman do: other software on the
    host may rely on it by then.
    """
    return set(netns, "net.ipv4.ip_forward", "1")


def route_localnet(netns: str, iface: str, on: bool) -> bool:
    """Allow (or stop) 127.0.0.0/8 addresses being routed via ``iface``; True if changed.

    Needed on a bridge for a published port to answer on 127.0.0.1: the DNAT
    in the output chain sends a packet with a loopback source out of the
    bridge, which the kernel otherwise drops as martian.
    """
    if not isinstance(iface, str) or not _IFNAME_RE.match(iface) or iface in (".", ".."):
        raise InvalidArgument(f"invalid interface name {iface!r}", obj=str(iface))
    # Slash form: the interface name may contain dots.
    return set(netns, f"net/ipv4/conf/{iface}/route_localnet", "1" if on else "0")
