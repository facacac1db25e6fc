"""Docker's human-readable units, shared by every view that prints them."""

from __future__ import annotations


def human_duration(seconds: float) -> str:
    """``units.HumanDuration``: "Less than a second", "About a minute", "3 weeks"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)  # Go rounds the duration to the hour here
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


# Sizes as github.com/docker/go-units prints them (Go's %.Ng and Python's agree).
DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def custom_size(size: float, base: float, units: tuple[str, ...], precision: int) -> str:
    """go-units CustomSize with ``%.<precision>g``."""
    value, i = float(size), 0
    while value >= base and i < len(units) - 1:
        value /= base
        i += 1
    return f"{value:.{precision}g}{units[i]}"


def human_size(size: float, precision: int = 4) -> str:
    """``units.HumanSizeWithPrecision``: decimal units, ``4.26MB`` at precision 3.
    ``docker images`` and ``stats`` use precision 3, ``units.HumanSize`` (prune totals, df) 4."""
    return custom_size(size, 1000.0, DECIMAL_UNITS, precision)


def bytes_size(size: float) -> str:
    """go-units BytesSize (binary, 4 significant digits): 1.5MiB."""
    return custom_size(size, 1024.0, BINARY_UNITS, 4)
