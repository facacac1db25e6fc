"""`docker events` semantics over the events log: time arguments, filters, line format."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from engine.errors import InvalidArgument

# Go duration units, as `docker events --since 10m` accepts them.
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIX = re.compile(r"^(\d+)(?:\.(\d{1,9}))?$")
_FRACTION = re.compile(r"\.(\d+)")

FILTER_KEYS = ("container", "event", "image", "label", "network", "scope", "type", "volume")


def parse_duration_ns(text: str) -> int | None:
    """A Go duration ("10m", "1h30m", "1.5s") in ns, or None if it is not one."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return int(total) if pos == len(text) and text else None


def parse_time_ns(value: object, now_ns: int | None = None) -> int:
    """Docker's --since/--until: RFC 3339 (or its date-only/short forms), unix seconds
    with up to 9 fraction digits, or a duration meaning that long ago. None/"" is 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, datetime):
        return int(value.timestamp() * 1e9)
    if isinstance(value, int | float):
        return int(value * 1_000_000_000)
    text = str(value).strip()
    now_ns = time.time_ns() if now_ns is None else now_ns
    m = _UNIX.match(text)
    if m:
        return int(m.group(1)) * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))
    dur = parse_duration_ns(text)
    if dur is not None:
        return now_ns - dur
    return _parse_rfc3339_ns(text)


def _parse_rfc3339_ns(text: str) -> int:
    s = text.replace("z", "Z")
    # Python's fromisoformat takes at most 6 fraction digits: keep the nanoseconds apart.
    frac_ns = 0
    fm = _FRACTION.search(s)
    if fm:
        frac_ns = int(fm.group(1)[:9].ljust(9, "0"))
        s = s[: fm.start()] + s[fm.end() :]
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise InvalidArgument(
            f"invalid time {text!r}: use RFC 3339, unix seconds or a duration like 10m", obj=text
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # docker reads zone-less times as local time
    return int(dt.timestamp()) * 1_000_000_000 + frac_ns


def parse_filters(filters: Iterable[str] | dict) -> dict[str, list[str]]:
    """``["type=container", "event=start"]`` (or a dict) into key -> values."""
    out: dict[str, list[str]] = {}
    items: Iterable[tuple[str, object]]
    items = filters.items() if isinstance(filters, dict) else (_split(f) for f in filters)
    for key, value in items:
        if key not in FILTER_KEYS:
            raise InvalidArgument(f"invalid filter {key!r}", obj=key)
        vals = value if isinstance(value, list | tuple) else [value]
        out.setdefault(key, []).extend(str(v) for v in vals)
    return out


def _split(f: str) -> tuple[str, str]:
    key, sep, value = f.partition("=")
    if not sep:
        raise InvalidArgument(f"bad format of filter (expected name=value): {f!r}", obj=f)
    return key.strip().lower(), value


def _label_ok(attrs: dict, want: str) -> bool:
    k, sep, v = want.partition("=")
    return k in attrs and (not sep or str(attrs[k]) == v)


def matches(ev: dict, filters: dict[str, list[str]]) -> bool:
    """Docker's rule: values of one key are OR-ed, different keys AND-ed."""
    actor = ev.get("Actor", {})
    oid, attrs, typ = actor.get("ID", ""), actor.get("Attributes", {}), ev.get("Type", "")

    def names_obj(v: str, kind: str) -> bool:
        # An object filter matches the ID (or its prefix) or the name of that kind of object.
        return typ == kind and (oid.startswith(v) or attrs.get("name") == v)

    checks = {
        "type": lambda v: typ == v,
        "event": lambda v: ev.get("Action") == v or ev.get("Action", "").startswith(v + ":"),
        "container": lambda v: names_obj(v, "container"),
        "volume": lambda v: names_obj(v, "volume"),
        "network": lambda v: names_obj(v, "network") or attrs.get("network") == v,
        "image": lambda v: attrs.get("image") == v or names_obj(v, "image"),
        "label": lambda v: _label_ok(attrs, v),
        "scope": lambda v: v == "local",
    }
    return all(any(checks[k](v) for v in vals) for k, vals in filters.items())


def format_time_ns(ns: int) -> str:
    base = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ns % 1_000_000_000:09d}Z"


def format_line(ev: dict) -> str:
    """``<time> <type> <action> <id> (k=v, ...)``, as `docker events` prints, plus the actor."""
    actor = ev.get("Actor", {})
    attrs = {k: v for k, v in sorted(actor.get("Attributes", {}).items())}
    if ev.get("actor"):
        attrs["actor"] = ev["actor"]
    shown = ", ".join(f"{k}={v}" for k, v in attrs.items())
    line = f"{format_time_ns(ev['timeNano'])} {ev['Type']} {ev['Action']} {actor.get('ID', '')}"
    return f"{line} ({shown})" if shown else line
