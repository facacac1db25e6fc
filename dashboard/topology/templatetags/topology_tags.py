"""Filters of the topology pages: byte sizes, limits that may be "unlimited", shares."""

from __future__ import annotations

from django import template

register = template.Library()

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
# cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages).
_UNLIMITED = 1 << 62


@register.filter
def bytes_h(n) -> str:
    if n is None or n == "":
        return "—"
    n = float(n)
    i = 0
    while abs(n) >= 1024 and i < len(_UNITS) - 1:
        n /= 1024
        i += 1
    return f"{n:.0f} {_UNITS[i]}" if i == 0 else f"{n:.1f} {_UNITS[i]}"


@register.filter
def limit_h(n) -> str:
    """A byte limit: -1, 0 (pids: 0 = none) or a huge value mean unlimited."""
    if n is None or n == "" or int(n) < 0 or int(n) >= _UNLIMITED:
        return "unlimited"
    return bytes_h(n)


@register.filter
def percent_of(use, limit) -> int:
    """Use as a whole percentage of a limit (0 when unlimited)."""
    try:
        use, limit = float(use), float(limit)
    except (TypeError, ValueError):
        return 0
    if limit <= 0 or limit >= _UNLIMITED:
        return 0
    return min(100, round(100 * use / limit))


@register.filter
def ns_ms(n) -> str:
    if n is None:
        return "—"
    return f"{float(n) / 1e6:.1f} ms"
