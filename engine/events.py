"""The events log: every client (CLI, dashboard, Celery tasks, conmon's exit
command) appends here; each event gets a sequence number and the actor, so the
dashboard can follow it (snapshot + resume from a seq without gaps) and its
audit log covers CLI actions too.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from engine.state import StateDB, dumps


@dataclass
class Event:
    seq: int
    time_nano: int
    actor: str
    type: str  # container | image | volume | network | system
    action: str  # create, start, die, stop, destroy, pull, tag, health_status: healthy ...
    id: str
    attrs: dict = field(default_factory=dict)

    def to_docker(self) -> dict:
        """Docker's events JSON shape (plus seq and actor)."""
        return {
            "seq": self.seq,
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": self.attrs},
            "actor": self.actor,
            "time": self.time_nano // 1_000_000_000,
            "timeNano": self.time_nano,
        }


def default_actor() -> str:
    """The CLI's actor: the Unix user (uid) that ran it."""
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return f"uid:{uid}({name})"


def append(db: StateDB, actor: str, type_: str, action: str, obj_id: str, **attrs: object) -> int:
    with db.write() as c:
        cur = c.execute(
            "INSERT INTO events(time_nano, actor, type, action, obj_id, attrs) VALUES (?,?,?,?,?,?)",
            (time.time_ns(), actor, type_, action, obj_id, dumps(attrs)),
        )
        return int(cur.lastrowid or 0)


def _row(r) -> Event:
    return Event(
        seq=r["seq"],
        time_nano=r["time_nano"],
        actor=r["actor"],
        type=r["type"],
        action=r["action"],
        id=r["obj_id"],
        attrs=json.loads(r["attrs"]),
    )


def since(
    db: StateDB, *, after_seq: int = 0, since_ns: int = 0, until_ns: int = 0, limit: int = 10000
) -> list[Event]:
    sql = "SELECT * FROM events WHERE seq > ? AND time_nano >= ?"
    args: list = [after_seq, since_ns]
    if until_ns:
        sql += " AND time_nano <= ?"
        args.append(until_ns)
    sql += " ORDER BY seq LIMIT ?"
    args.append(limit)
    return [_row(r) for r in db.query(sql, tuple(args))]


def last_seq(db: StateDB) -> int:
    row = db.one("SELECT MAX(seq) AS m FROM events")
    return int(row["m"] or 0) if row else 0


def follow(db: StateDB, *, after_seq: int, poll: float = 0.1) -> Iterator[Event]:
    """Yield events as they are appended (polling the WAL database is cheap)."""
    seq = after_seq
    while True:
        batch = since(db, after_seq=seq)
        for ev in batch:
            seq = ev.seq
            yield ev
        if not batch:
            time.sleep(poll)
