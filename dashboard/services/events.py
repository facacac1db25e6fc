"""The engine's events log, for the events page, its websocket and the relay.

Each event is a plain dict (the fields of engine.events.Event)::

    {"seq": 42, "time": 1700000000.123, "when": "2023-11-14 22:13:20.123" (UTC),
     "time_nano": ..., "actor": "user:alice",
     "type": "container", "action": "start", "id": "<full id>", "attrs": {"name": "web"}}

``seq`` orders the log: a page takes a snapshot (``recent``), remembers its
``last_seq``, and resumes with ``after(seq)``; nothing is missed or repeated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dashboard.services import engine_for

TYPES = ("container", "image", "volume", "network", "system")
SNAPSHOT_MAX = 1000


def _engine():
    return engine_for(None)


def as_dict(ev: Any) -> dict:
    when = datetime.fromtimestamp(ev.time_nano / 1e9, tz=UTC)
    return {
        "seq": ev.seq,
        "time": ev.time_nano / 1e9,
        "when": when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],  # UTC, for display
        "time_nano": ev.time_nano,
        "actor": ev.actor,
        "type": ev.type,
        "action": ev.action,
        "id": ev.id,
        "attrs": ev.attrs,
    }


def last_seq() -> int:
    return _engine().last_event_seq()


def after(seq: int, limit: int = 1000) -> list[dict]:
    """Events with a sequence number above ``seq``, oldest first, at most ``limit``."""
    return [as_dict(e) for e in _engine().events_after(seq, limit)]


def parse_filter(values: Any) -> tuple[str, ...]:
    """Comma-separated or repeated values, blanks dropped: "container,image" -> (...)."""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values or ():
        out.extend(p.strip() for p in str(v).split(",") if p.strip())
    return tuple(out)


def matches(ev: dict, types: tuple[str, ...] = (), actions: tuple[str, ...] = ()) -> bool:
    """Type and action filters; an action filter "health_status" matches
    "health_status: healthy" too (Docker's action names carry a suffix there)."""
    if types and ev["type"] not in types:
        return False
    if actions:
        act = ev["action"]
        return any(act == a or act.startswith(a + ":") for a in actions)
    return True


def recent(
    limit: int = 200, types: tuple[str, ...] = (), actions: tuple[str, ...] = ()
) -> tuple[list[dict], int]:
    """The last ``limit`` matching events (oldest first) and the log's last seq at the
    time of the snapshot (the point to resume from, whether or not it matched)."""
    limit = max(1, min(int(limit), SNAPSHOT_MAX))
    eng = _engine()
    top = eng.last_event_seq()
    found: list[dict] = []
    hi, chunk = top, max(limit, 500)
    # Walk back in chunks until enough matched or the log's start is reached.
    while hi > 0 and len(found) < limit:
        lo = max(0, hi - chunk)
        batch = [as_dict(e) for e in eng.events_after(lo, limit=hi - lo)]
        batch = [e for e in batch if e["seq"] <= hi and matches(e, types, actions)]
        found[:0] = batch
        hi = lo
    return found[-limit:], top


def db_files() -> list[Path]:
    """The files whose change means the log may have grown (the relay stats them)."""
    db = Path(_engine().config.db_path)
    return [db, db.with_name(db.name + "-wal")]
