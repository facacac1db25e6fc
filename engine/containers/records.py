"""The container record (one row of the state DB) and where its files live."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from engine.config import EngineConfig
from engine.containers.options import CreateOptions
from engine.errors import InvalidArgument, NotFound
from engine.state import StateDB, dumps

ACTIVE = ("running", "paused")


@dataclass
class Container:
    id: str
    name: str
    image_id: str
    image_ref: str
    created: float
    state: str
    opts: CreateOptions
    # Resolved at create time from the image + options (Docker's Config).
    args: list[str]
    env: list[str]
    workdir: str
    user: str
    stop_signal: str
    health: dict | None
    exposed_ports: dict
    image_volumes: list[str]
    pid: int = 0
    conmon_pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    started_at: float = 0.0
    finished_at: float = 0.0
    restart_count: int = 0
    user_stopped: bool = False
    error: str = ""
    boot_id: str = ""
    health_state: dict = field(default_factory=dict)
    runtime: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def config_json(self) -> str:
        return dumps(
            {
                "opts": self.opts.to_dict(),
                "args": self.args,
                "env": self.env,
                "workdir": self.workdir,
                "user": self.user,
                "stop_signal": self.stop_signal,
                "health": self.health,
                "exposed_ports": self.exposed_ports,
                "image_volumes": self.image_volumes,
                "runtime": self.runtime,
                "extra": self.extra,
            }
        )


class Paths:
    """Files of one container: persistent under root, runtime under run."""

    def __init__(self, config: EngineConfig, cid: str):
        self.dir = config.containers_dir / cid
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.merged = self.dir / "merged"
        self.userdata = self.dir / "userdata"
        self.persist = self.dir / "persist"
        self.log = self.userdata / "ctr.log"
        self.bundle = config.run / "containers" / cid
        self.exit_file = config.exits_dir / cid
        self.lock = config.locks_dir / f"ctr-{cid}.lock"
        self.netns_name = f"{config.prefix}-{cid[:12]}"


def from_row(r) -> Container:
    cfg = json.loads(r["config"])
    return Container(
        id=r["id"],
        name=r["name"],
        image_id=r["image_id"],
        image_ref=r["image_ref"],
        created=r["created"],
        state=r["state"],
        opts=CreateOptions.from_dict(cfg["opts"]),
        args=cfg["args"],
        env=cfg["env"],
        workdir=cfg["workdir"],
        user=cfg["user"],
        stop_signal=cfg["stop_signal"],
        health=cfg.get("health"),
        exposed_ports=cfg.get("exposed_ports") or {},
        image_volumes=cfg.get("image_volumes") or [],
        pid=r["pid"],
        conmon_pid=r["conmon_pid"],
        exit_code=r["exit_code"],
        oom_killed=bool(r["oom_killed"]),
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        restart_count=r["restart_count"],
        user_stopped=bool(r["user_stopped"]),
        error=r["error"],
        boot_id=r["boot_id"],
        health_state=json.loads(r["health"]) if r["health"] else {},
        runtime=cfg.get("runtime", ""),
        extra=cfg.get("extra") or {},
    )


def load(db: StateDB, ref: str) -> Container:
    """By full ID, exact name, or unique ID prefix — Docker's lookup order."""
    ref = ref.lstrip("/") if ref else ref
    if not ref:
        raise InvalidArgument("container name or ID must not be empty")
    r = db.one("SELECT * FROM containers WHERE id=?", (ref,)) or db.one(
        "SELECT * FROM containers WHERE name=?", (ref,)
    )
    if r is None and all(c in "0123456789abcdef" for c in ref):
        rows = db.query("SELECT * FROM containers WHERE id LIKE ?", (ref + "%",))
        if len(rows) > 1:
            raise InvalidArgument(f"multiple containers match ID prefix {ref!r}")
        r = rows[0] if rows else None
    if r is None:
        raise NotFound(f"No such container: {ref}", obj=ref)
    return from_row(r)


def load_all(db: StateDB) -> list[Container]:
    return [from_row(r) for r in db.query("SELECT * FROM containers ORDER BY created DESC")]


def update(db: StateDB, cid: str, **fields) -> None:
    if not fields:
        return
    cols = ", ".join(f"{k}=?" for k in fields)
    vals = [int(v) if isinstance(v, bool) else v for v in fields.values()]
    with db.write() as c:
        c.execute(f"UPDATE containers SET {cols} WHERE id=?", (*vals, cid))
